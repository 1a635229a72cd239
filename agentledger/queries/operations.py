"""What ops asks during an incident: tool health, control-loop history and state, and
whether the pipeline itself is healthy; plus the store's retention for operators."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries import pipeline, verification
from agentledger.queries.common import Forbidden, Scope, Where, rows
from agentledger.schemas.ddl import RETENTION, table_ttl_days
from agentledger.schemas.signals import CLEARED, CLOSED, NORMAL

CONTROL_KINDS: Final = ("breaker", "safe_mode", "budget", "override")
# States that mean "nothing is restricted": everything else is an active restriction.
AT_REST: Final = (CLOSED, NORMAL, CLEARED)


def tool_health(client: Client, scope: Scope, since: dt.datetime | None,
                until: dt.datetime | None, *, tenant: str | None = None,
                agent: str | None = None, tool: str | None = None,
                bucket_minutes: int | None = None) -> dict[str, Any]:
    """Calls, errors, timeouts, error rate and latency quantiles per tool (and per bucket),
    and the verified-write rate (:mod:`agentledger.queries.verification`)."""
    scope = scope.narrow(tenant)
    where = Where().scope(scope).between("minute", since, until, "DateTime('UTC')")
    where.equals("agent", agent).equals("tool", tool)
    bucket = ""
    if bucket_minutes:
        bucket = "toStartOfInterval(minute, toIntervalMinute({bucket:UInt32})) AS bucket, "
        where.params["bucket"] = bucket_minutes
    found = rows(client, (
        f"SELECT {bucket}tool, uniqExactMerge(calls) AS calls, uniqExactMerge(errors) AS errors, "
        "uniqExactMerge(timeouts) AS timeouts, uniqExactMerge(rejected) AS rejected, "
        "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency) AS latency_ms "
        f"FROM tool_health_minute WHERE {where.sql()} "
        f"GROUP BY {'bucket, ' if bucket else ''}tool ORDER BY {'bucket, ' if bucket else ''}tool"
    ), where.params)
    checked = verification.verified_writes(client, scope, since, until, agent=agent,
                                           tool=tool, bucket_minutes=bucket_minutes)
    for row in found:
        row.update(checked.get((row["bucket"], row["tool"]) if bucket else (row["tool"],),
                               verification.EMPTY))
        failed = row["errors"] + row["timeouts"]
        row["error_rate"] = round(failed / row["calls"], 6) if row["calls"] else None
        p50, p95, p99 = (round(float(q), 3) for q in row.pop("latency_ms"))
        row.update(p50_ms=p50, p95_ms=p95, p99_ms=p99)
    return {"since": since, "until": until, "tools": found}


def control_history(client: Client, scope: Scope, since: dt.datetime | None,
                    until: dt.datetime | None, *, tenant: str | None = None,
                    kind: str | None = None, limit: int = 500) -> dict[str, Any]:
    """Every breaker, safe-mode, budget and override transition, newest first."""
    scope = scope.narrow(tenant)
    where = Where().scope(scope).between("ts", since, until).equals("kind", kind)
    found = rows(client, (
        "SELECT ts, tenant, kind, scope, rule, state, previous_state, version, reason, "
        "policy_version, fallback, triggered_by FROM control_signals FINAL "
        f"WHERE {where.sql()} ORDER BY ts DESC, kind, scope, version DESC "
        f"LIMIT {int(limit)}"), where.params)
    return {"signals": found}


def control_state(client: Client, scope: Scope, *, tenant: str | None = None,
                  active_only: bool = False) -> dict[str, Any]:
    """The current state of every scope the control loop has spoken about."""
    scope = scope.narrow(tenant)
    where = Where().scope(scope)
    found = rows(client, (
        "SELECT tenant, kind, scope, rule, argMax(state, version) AS state, "
        "argMax(reason, version) AS reason, argMax(ts, version) AS since, "
        "max(version) AS latest_version "
        f"FROM control_signals FINAL WHERE {where.sql()} "
        "GROUP BY tenant, kind, scope, rule ORDER BY kind, scope, rule"), where.params)
    for row in found:
        row["version"] = row.pop("latest_version")
        row["active"] = row["state"] not in AT_REST and row["kind"] != "budget"
    if active_only:
        found = [r for r in found if r["active"]]
    return {"scopes": found}


def pipeline_health(client: Client, scope: Scope, *, now: dt.datetime | None = None,
                    sink: dict[str, Any] | None = None,
                    limits: pipeline.HealthLimits | None = None) -> dict[str, Any]:
    """Is data arriving, is bad input piling up, is anything degraded right now.

    Degraded means an active restriction (open breaker, safe mode) or a pipeline problem
    (see :mod:`agentledger.queries.pipeline`); pipeline details are for operators only.
    """
    now = now or dt.datetime.now(dt.UTC)
    where = Where().scope(scope)
    fresh = rows(client, (
        "SELECT count() AS events, max(ts) AS newest_event, max(ingested_at) AS last_ingest, "
        "countIf(ingested_at >= {hour_ago:DateTime64(3, 'UTC')}) AS events_last_hour "
        f"FROM events WHERE {where.sql()}"), {**where.params, "hour_ago": now - dt.timedelta(
            hours=1)})[0]
    state = control_state(client, scope, active_only=True)["scopes"]
    report: dict[str, Any] = {
        "store": "ok",
        "events": fresh["events"],
        "events_last_hour": fresh["events_last_hour"],
        "newest_event": fresh["newest_event"] if fresh["events"] else None,
        "last_ingest": fresh["last_ingest"] if fresh["events"] else None,
        "open_breakers": [s for s in state if s["kind"] == "breaker"],
        "safe_modes": [s for s in state if s["kind"] in ("safe_mode", "override")],
    }
    if scope.tenants is None:
        # Rejected input has no trustworthy tenant, so only operators see it.
        rejected = rows(client, (
            "SELECT reason, count() AS messages FROM rejected_events FINAL "
            "WHERE received_at >= {hour_ago:DateTime64(3, 'UTC')} GROUP BY reason "
            "ORDER BY messages DESC"), {"hour_ago": now - dt.timedelta(hours=1)})
        report["rejected_last_hour"] = {r["reason"]: r["messages"] for r in rejected}
        if sink is not None:
            report["sink"] = sink
        found = pipeline.components(client, now)
        report["dlq_per_minute"] = pipeline.dlq_per_minute(client, now)
        report["components"] = found
        report["problems"] = pipeline.problems(found, report["dlq_per_minute"],
                                               limits or pipeline.HealthLimits())
    degraded = bool(report["open_breakers"] or report["safe_modes"] or report.get("problems"))
    report["status"] = "degraded" if degraded else "ok"
    return report


def retention(client: Client, scope: Scope, db: str,
              configured: dict[str, int]) -> list[dict[str, Any]]:
    """Per table: configured and applied TTL, rows and bytes on disk."""
    if scope.tenants is not None:
        raise Forbidden("store metadata needs an operator key")
    applied = table_ttl_days(client, db)
    sizes = {r["table"]: r for r in rows(client, (
        "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes_on_disk "
        "FROM system.parts WHERE database = {db:String} AND active "
        "GROUP BY table"), {"db": db})}
    report = []
    for table, spec in RETENTION.items():
        size = sizes.get(table, {})
        report.append({
            "table": table,
            "configured_days": configured[spec.placeholder],
            "applied_days": applied.get(table),
            "ttl": f"{spec.expression} + INTERVAL {configured[spec.placeholder]} DAY",
            "rows": size.get("rows", 0),
            "bytes_on_disk": size.get("bytes_on_disk", 0),
        })
    return report
