"""One snapshot of what ops watches live (``GET /v1/watch``, ``agentledger watch``).

Throughput in (by event time) and landed (by ingest time), the sink's and the control
loop's lag from their heartbeats, the dead-letter rate, every breaker and safe mode with
its reason and age, the transitions of the last minutes, the most expensive recent runs
and the cost per successful task now. Tenant-scoped like every query; the pipeline's own
figures (heartbeats, rejected input) have no tenant and are shown to operator keys only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from agentledger.queries import pipeline
from agentledger.queries.common import Scope, Where, rows
from agentledger.queries.operations import AT_REST, control_state

RATE_WINDOW = dt.timedelta(seconds=60)


def _since(now: dt.datetime, delta: dt.timedelta) -> dict[str, Any]:
    return {"since": now - delta, "now": now}


def throughput(client: Client, scope: Scope, now: dt.datetime) -> dict[str, Any]:
    """Events per second over the last minute: arrived (event time) and landed (ingest)."""
    where = Where().scope(scope)
    found = rows(client, (
        "SELECT countIf(ts >= {since:DateTime64(6, 'UTC')} AND ts < {now:DateTime64(6, 'UTC')})"
        " AS arrived, countIf(ingested_at >= {since:DateTime64(6, 'UTC')}) AS landed, "
        "count() AS seen, max(ts) AS newest_event, max(ingested_at) AS last_ingest "
        f"FROM events WHERE {where.sql()} AND ingested_at >= {{since:DateTime64(6, 'UTC')}} - "
        "INTERVAL 1 DAY"), {**where.params, **_since(now, RATE_WINDOW)})[0]
    seconds = RATE_WINDOW.total_seconds()
    return {"window_s": seconds, "in_per_s": round(found["arrived"] / seconds, 2),
            "landed_per_s": round(found["landed"] / seconds, 2),
            "newest_event": found["newest_event"] if found["seen"] else None,
            "last_ingest": found["last_ingest"] if found["seen"] else None}


def lags(client: Client, now: dt.datetime) -> dict[str, Any]:
    """The sink's and the control loop's progress, from their newest heartbeats."""
    found = pipeline.components(client, now)

    def newest(component: str) -> dict[str, Any] | None:
        mine = [r for r in found if r["component"] == component]
        return min(mine, key=lambda r: r["age_s"]) if mine else None

    sink, streams, behind = newest("sink"), newest("streams"), newest("streams-lag")
    report: dict[str, Any] = {"sink": None, "control_loop": None}
    if sink:
        d = sink["details"]
        report["sink"] = {"status": sink["status"], "heartbeat_age_s": sink["age_s"],
                          "lag_events": sink["lag_events"], "uncommitted": d.get("uncommitted"),
                          "seconds_since_progress": d.get("seconds_since_progress")}
    if streams:
        event_time = streams["details"].get("event_time")
        report["control_loop"] = {
            "status": streams["status"], "heartbeat_age_s": streams["age_s"],
            "event_time": (dt.datetime.fromtimestamp(event_time, dt.UTC)
                           if event_time else None),
            "lag_events": behind["lag_events"] if behind else None}
    return report


def control(client: Client, scope: Scope, now: dt.datetime,
            recent: dt.timedelta) -> dict[str, Any]:
    """Every breaker and safe mode now (reason, age), and the transitions of ``recent``."""
    state = control_state(client, scope)["scopes"]
    for row in state:
        # event time may run a little ahead of this clock (a producer's clock, a replay)
        row["age_s"] = max(0.0, round((now - row["since"]).total_seconds(), 1))
    where = Where().scope(scope).add("ts >= {since:DateTime64(6, 'UTC')}",
                                     since=now - recent)
    changes = rows(client, (
        "SELECT ts, tenant, kind, scope, previous_state, state, reason FROM control_signals "
        f"FINAL WHERE {where.sql()} AND kind != 'budget' ORDER BY ts DESC LIMIT 50"),
        where.params)
    return {
        "breakers": [s for s in state if s["kind"] == "breaker"],
        "safe_modes": [s for s in state if s["kind"] in ("safe_mode", "override")],
        "degraded": [s for s in state if s["state"] not in AT_REST and s["kind"] != "budget"],
        "transitions": changes,
    }


def economics(client: Client, scope: Scope, now: dt.datetime,
              recent: dt.timedelta) -> dict[str, Any]:
    """The most expensive runs of ``recent``, and what a successful task costs over it."""
    where = Where().scope(scope).add("finished_at >= {since:DateTime64(6, 'UTC')}",
                                     since=now - recent)
    top = rows(client, (
        "SELECT finished_at, tenant, workflow, agent, outcome, cost_micros / 1e6 AS cost_usd, "
        f"run_id FROM daily_economics FINAL WHERE {where.sql()} "
        "ORDER BY cost_micros DESC LIMIT 5"), where.params)
    per_workflow = rows(client, (
        "SELECT workflow, count() AS runs, countIf(outcome = 'success') AS successes, "
        "sum(cost_micros) / 1e6 AS cost_usd FROM daily_economics FINAL "
        f"WHERE {where.sql()} GROUP BY workflow ORDER BY workflow"), where.params)
    for row in per_workflow:
        row["usd_per_success"] = (round(row["cost_usd"] / row["successes"], 6)
                                  if row["successes"] else None)
    runs = sum(r["successes"] for r in per_workflow)
    cost = sum(r["cost_usd"] for r in per_workflow)
    return {"most_expensive_runs": top, "cost_per_success": {
        "usd_per_success": round(cost / runs, 6) if runs else None,
        "successes": runs, "by_workflow": per_workflow}}


def snapshot(client: Client, scope: Scope, *, now: dt.datetime | None = None,
             recent_minutes: int = 15) -> dict[str, Any]:
    """Everything ``agentledger watch`` shows, as of ``now``."""
    now = now or dt.datetime.now(dt.UTC)
    recent = dt.timedelta(minutes=recent_minutes)
    report: dict[str, Any] = {"now": now, "recent_minutes": recent_minutes,
                              "throughput": throughput(client, scope, now)}
    if scope.tenants is None:  # the pipeline has no tenant: operators only
        report.update(lags(client, now))
        report["dlq_per_minute"] = pipeline.dlq_per_minute(client, now)
    report.update(control(client, scope, now, recent))
    report.update(economics(client, scope, now, recent))
    return report
