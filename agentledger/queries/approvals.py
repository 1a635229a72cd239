"""Approval requests and tool-gating metrics, from the recorded events.

Requests are ``approval.requested`` events — for each approval id the first one stored
(landing order), whatever tenant later events with the same id claim; resolutions are
``approval.resolved`` events the agents recorded on their runs (joined by ``approval_id``,
tenant and run). The votes of a request still in progress live on ``agent.approvals`` and
are merged in by the API. Metrics come from the
gate's own records: ``policy.decision`` (deny, escalate) of the tool gate — the control
loop's refusals (policy ``agentledger.control``) are counted apart — and every
``tool.call`` that went ahead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import orjson
from clickhouse_connect.driver.client import Client

from agentledger.queries.common import NotFound, QueryError, Scope, Where, rows

CONTROL_POLICY: Final = "agentledger.control"
GROUPS: Final = {"tenant": "tenant", "agent": "agent", "tool": "tool"}

_LANDING = "ingested_at, kafka_partition, kafka_offset, ts, event_id"
"""The order requests were stored in. Not by ``ts`` alone: an agent writes its own event
time, so a later request could claim an earlier one."""

_IDS = ("SELECT JSONExtractString(body, 'approval_id') FROM events "
        "WHERE event_type = 'approval.requested' AND {where}")

_FIRST = (
    # every physical copy: approval_requests (schemas/clickhouse/025) keeps each stored
    # copy of each request, by approval id, so a redelivered copy of the first request
    # lands later than the first and cannot let a request stored in between become
    # "first"; and finding the first of an id is a primary-key lookup, not a scan of
    # every request's body
    "SELECT approval_id, event_id, tenant, agent, run_id, ts, queue, action, reason, "
    "required, sla_s, expires_in_s, args FROM approval_requests "
    "WHERE approval_id IN (" + _IDS + ") "
    "ORDER BY approval_id, " + _LANDING + " LIMIT 1 BY approval_id"
)

_REQUESTS = (
    "SELECT r.approval_id AS approval_id, r.tenant AS tenant, r.agent AS agent, "
    "r.run_id AS run_id, r.ts AS requested_at, r.queue AS queue, r.action AS action, "
    "r.reason AS reason, r.required AS approvals_required, r.sla_s AS sla_s, "
    "r.expires_in_s AS expires_in_s, r.args AS args, s.r_decision AS resolution, "
    "s.r_ts AS resolved_at, s.r_latency AS latency_ms, s.r_approvers AS approvers "
    # the first request of each id, then the caller's scope and window on *that* request:
    # a later one with the same id (another tenant's) never stands for it
    "FROM (SELECT * FROM (" + _FIRST + ") WHERE {where}) AS r "
    "LEFT JOIN (SELECT JSONExtractString(body, 'approval_id') AS approval_id, tenant, "
    "run_id, any(decision) AS r_decision, any(ts) AS r_ts, any(latency_ms) AS r_latency, "
    "any(JSONExtract(body, 'approvers', 'Array(String)')) AS r_approvers FROM events FINAL "
    "WHERE event_type = 'approval.resolved' AND {where} "
    "GROUP BY approval_id, tenant, run_id) AS s "
    "USING (approval_id, tenant, run_id) WHERE r.approval_id != '' {extra} "
    "ORDER BY requested_at DESC LIMIT {limit}"
)

_REFUSED = (
    # requests in the caller's scope and window that are not the first of their id
    "SELECT count() AS refused FROM (SELECT DISTINCT event_id, "
    "JSONExtractString(body, 'approval_id') AS approval_id FROM events "
    "WHERE event_type = 'approval.requested' AND {where}) AS e "
    "INNER JOIN (SELECT approval_id, event_id AS first_id FROM (" + _FIRST + ")) AS f "
    "USING approval_id WHERE e.event_id != f.first_id"
)


def requests(client: Client, scope: Scope, *, tenant: str | None = None,
             approval_id: str | None = None, queue: str | None = None,
             since: dt.datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Approval requests with their recorded resolution (if any), newest first."""
    scope = scope.narrow(tenant)
    where = Where().scope(scope).between("ts", since, None)
    extra = ""
    if approval_id is not None:
        extra += " AND r.approval_id = {approval_id:String}"
        where.params["approval_id"] = approval_id
    if queue is not None:
        extra += " AND r.queue = {queue:String}"
        where.params["queue"] = queue
    found = rows(client, _REQUESTS.format(where=where.sql(), extra=extra, limit=int(limit)),
                 where.params)
    for row in found:
        row["args"] = orjson.loads(row["args"]) if row["args"] else None
        row["resolution"] = row["resolution"] or None
        if row["resolution"] is None:
            row["resolved_at"] = row["latency_ms"] = None
            row["approvers"] = []
    return found


def refused_requests(client: Client, scope: Scope, since: dt.datetime | None,
                     until: dt.datetime | None) -> int:
    """How many ``approval.requested`` events (in ``scope``) reused an approval id an
    earlier request had: refused, never listed nor voted on."""
    where = Where().scope(scope).between("ts", since, until)
    found = rows(client, _REFUSED.format(where=where.sql()), where.params)
    return int(found[0]["refused"]) if found else 0


def request(client: Client, scope: Scope, approval_id: str) -> dict[str, Any]:
    found = requests(client, scope, approval_id=approval_id, limit=1)
    if not found:
        raise NotFound(f"no approval request {approval_id!r}")
    return found[0]


_STATS = (
    "SELECT {key} AS key, countIf(kind = 'call') AS tool_calls, "
    "countIf(kind = 'deny') AS blocks, countIf(kind = 'escalate') AS escalations, "
    "countIf(kind = 'refused') AS control_refusals, "
    "countIf(kind = 'resolved' AND outcome IN ('approved', 'rejected')) AS decided, "
    "countIf(kind = 'resolved' AND outcome = 'approved') AS approved, "
    "countIf(kind = 'resolved' AND outcome = 'expired') AS expired, "
    "countIf(kind = 'resolved' AND (outcome = 'expired' OR "
    "(sla_s > 0 AND latency_ms > sla_s * 1000))) AS sla_breaches, "
    "quantilesIf(0.5, 0.95)(latency_ms, kind = 'resolved' AND "
    "outcome IN ('approved', 'rejected')) AS latency "
    "FROM ("
    "SELECT tenant, agent, tool, 'call' AS kind, '' AS outcome, 0.0 AS latency_ms, "
    "0.0 AS sla_s FROM events FINAL WHERE event_type = 'tool.call' AND {where} "
    "UNION ALL SELECT tenant, agent, splitByChar(':', action)[1] AS tool, "
    "if(JSONExtractString(body, 'policy_id') = '" + CONTROL_POLICY + "', 'refused', "
    "toString(decision)) AS kind, '' AS outcome, 0.0 AS latency_ms, 0.0 AS sla_s "
    "FROM events FINAL WHERE event_type = 'policy.decision' "
    "AND decision IN ('deny', 'escalate') AND {where} "
    "UNION ALL SELECT s.tenant AS tenant, s.agent AS agent, "
    "splitByChar(':', r.action)[1] AS tool, 'resolved' AS kind, "
    "toString(s.decision) AS outcome, s.latency_ms AS latency_ms, r.sla_s AS sla_s "
    "FROM (SELECT tenant, agent, decision, latency_ms, "
    "JSONExtractString(body, 'approval_id') AS approval_id FROM events FINAL "
    "WHERE event_type = 'approval.resolved' AND {where}) AS s "
    "LEFT JOIN (SELECT JSONExtractString(body, 'approval_id') AS approval_id, "
    "JSONExtractString(body, 'action') AS action, JSONExtractFloat(body, 'sla_s') AS sla_s "
    "FROM events FINAL WHERE event_type = 'approval.requested' AND {where}) AS r "
    "USING approval_id"
    ") GROUP BY key ORDER BY key"
)


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def stats(client: Client, scope: Scope, by: str, since: dt.datetime | None,
          until: dt.datetime | None, *, tenant: str | None = None) -> dict[str, Any]:
    """Policy-block rate, escalation rate, approval latency p50/p95, SLA breaches and
    override rate (approved escalations / escalations), per tenant, agent or tool."""
    if by not in GROUPS:
        raise QueryError(f"by must be one of {', '.join(GROUPS)}, not {by!r}")
    scope = scope.narrow(tenant)
    where = Where().scope(scope).between("ts", since, until)
    found = rows(client, _STATS.format(key=GROUPS[by], where=where.sql()), where.params)
    groups = []
    for row in found:
        gated = row["tool_calls"] + row["blocks"]
        p50, p95 = (None if q != q else round(float(q), 1) for q in row.pop("latency"))
        groups.append({
            **row, "block_rate": _rate(row["blocks"], gated),
            "escalation_rate": _rate(row["escalations"], gated),
            "override_rate": _rate(row["approved"], row["escalations"]),
            "approval_p50_ms": p50 if row["decided"] else None,
            "approval_p95_ms": p95 if row["decided"] else None})
    return {"by": by, "since": since, "until": until, "groups": groups}


_RULES = (
    "SELECT run_id, JSONExtractString(body, 'action') AS action, "
    "argMax(JSONExtractString(body, 'policy_id'), seq) AS policy_id, "
    "argMax(JSONExtractString(body, 'policy_version'), seq) AS policy_version, "
    "argMax(JSONExtractString(body, 'rule'), seq) AS rule FROM events "
    "WHERE event_type = 'policy.decision' AND decision = 'escalate' "
    "AND run_id IN {{run_ids:Array(String)}} AND {where} GROUP BY run_id, action"
)


def escalation_rules(client: Client, scope: Scope, run_ids: list[str],
                     since: dt.datetime | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """The policy rule that escalated each (run, action): the ``policy.decision`` an
    approval request follows on its run, for the inbox to name the rule that asked.
    ``since`` bounds the scan (the decisions come just before their requests)."""
    if not run_ids:
        return {}
    where = Where().scope(scope).between("ts", since, None)
    found = rows(client, _RULES.format(where=where.sql()),
                 {**where.params, "run_ids": sorted(set(run_ids))})
    return {(r["run_id"], r["action"]): r for r in found}
