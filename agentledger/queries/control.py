"""Why a controlled scope is in its state, and the tool results a policy backtest replays.

Both read what the control loop wrote or saw: ``control_signals`` (each transition keeps
the decision's explanation in ``details``: rule, window, calls and errors counted, bound,
threshold, agent time) and ``events`` (``tool.result`` rows, in event-time order).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import NotFound, QueryError, Scope, Where, rows
from agentledger.schemas.signals import CLEARED, CLOSED, NORMAL

_SCOPE: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}/(\*/)?[A-Za-z0-9_.:@-]{1,128}"
                           r"(/version/[A-Za-z0-9_.:@/+-]{1,128})?$")
AT_REST: Final = (CLOSED, NORMAL, CLEARED)
MAX_RESULTS_PAGE: Final = 200_000


def _parse_scope(target: str) -> tuple[str, str]:
    """``tenant/agent`` (safe mode, overrides), ``tenant/agent/version/<v>`` (the canary)
    or ``tenant/*/tool`` (breaker)."""
    if not _SCOPE.match(target):
        raise QueryError(f"scope must be TENANT/AGENT, TENANT/AGENT/version/VERSION or "
                         f"TENANT/*/TOOL, got {target!r}")
    return target.split("/", 1)[0], target


def explain(client: Client, scope: Scope, target: str, *, history: int = 20
            ) -> dict[str, Any]:
    """The scope's current state per (kind, rule), the transition that put it there with
    its explanation and triggering events, the last trip (when it last left its resting
    state, and why), and recent history (newest first)."""
    tenant, target = _parse_scope(target)
    scope = scope.narrow(tenant)
    where = Where().scope(scope).equals("tenant", tenant).equals("scope", target)
    found = rows(client, (
        "SELECT ts, kind, rule, state, previous_state, version, reason, policy_version, "
        "triggered_by, details FROM control_signals FINAL "
        f"WHERE {where.sql()} AND kind IN ('breaker', 'safe_mode', 'override') "
        "ORDER BY kind, rule, version DESC LIMIT 1000"), where.params)
    if not found:
        raise NotFound(f"the control loop has not decided anything about {target!r}")
    for row in found:
        try:
            row["details"] = json.loads(row["details"] or "{}")
        except ValueError:
            row["details"] = {}
    states = []
    for key in dict.fromkeys((r["kind"], r["rule"]) for r in found):
        mine = [r for r in found if (r["kind"], r["rule"]) == key]
        current = mine[0]
        # newest first: the last time it left its resting state (the episode's trip)
        trip = next((r for r in mine if r["previous_state"] in AT_REST
                     and r["state"] not in AT_REST), None)
        states.append({
            "kind": key[0], "rule": key[1], "state": current["state"],
            "since": current["ts"], "version": current["version"],
            "reason": current["reason"], "policy_version": current["policy_version"],
            "explanation": current["details"], "triggered_by": current["triggered_by"],
            "last_trip": None if trip is None else {
                "ts": trip["ts"], "version": trip["version"], "reason": trip["reason"],
                "explanation": trip["details"], "triggered_by": trip["triggered_by"]},
        })
    recent = sorted(found, key=lambda r: (r["ts"], r["version"]), reverse=True)[:history]
    return {"scope": target, "tenant": tenant, "states": states,
            "history": [{k: r[k] for k in ("ts", "kind", "rule", "previous_state", "state",
                                            "version", "reason")} for r in recent]}


def tool_results(client: Client, scope: Scope, since: dt.datetime | None,
                 until: dt.datetime | None, *, tenant: str | None = None,
                 after: tuple[int, str] | None = None,
                 limit: int = 50_000) -> dict[str, Any]:
    """One page of ``tool.result`` rows as compact tuples ``[ts_us, tenant, agent, tool,
    status, latency_ms, event_id, error_type]`` ordered by (ts, event_id); pass the last
    row's (ts_us, event_id) as ``after`` for the next page. ``run.finished`` rows come in
    the same order, for the canary, as ``[ts_us, tenant, agent, "", outcome, 0,
    event_id, agent_version]`` (a tool result always names its tool)."""
    if not 1 <= limit <= MAX_RESULTS_PAGE:
        raise QueryError(f"limit must be between 1 and {MAX_RESULTS_PAGE}")
    scope = scope.narrow(tenant)
    where = Where().scope(scope).between("ts", since, until).equals("tenant", tenant)
    where.add("event_type IN ('tool.result', 'run.finished')")
    if after is not None:
        where.add("(toUnixTimestamp64Micro(ts), toString(event_id)) > "
                  "({after_us:Int64}, {after_id:String})", after_us=after[0],
                  after_id=after[1])
    result = client.query(
        "SELECT toUnixTimestamp64Micro(ts), tenant, agent, "
        "if(event_type = 'run.finished', '', tool), "
        "if(event_type = 'run.finished', outcome, status), "
        "if(event_type = 'run.finished', 0, latency_ms), toString(event_id), "
        "if(event_type = 'run.finished', agent_version, error_type) FROM events FINAL "
        f"WHERE {where.sql()} ORDER BY ts, toString(event_id) LIMIT {int(limit)}",
        parameters=where.params, settings={"readonly": 2, "max_execution_time": 60})
    page = [list(r) for r in result.result_rows]
    return {"results": page, "more": len(page) == limit}
