"""The control loop's current state, for people: every breaker, safe mode, override and
exceeded run budget, with the transition that put it there.

Read from ``control_signals`` (what the control loop and the overrides published, landed
by the sink), the newest version of each (kind, scope, rule), tenant-scoped like every
query. Why one of them is in its state, with its trigger events and history, is
:func:`agentledger.queries.control.explain`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import Scope, Where, rows

KINDS: Final = ("breaker", "safe_mode", "override", "budget")
MAX_ROWS: Final = 2000


def board(client: Client, scope: Scope, *, tenant: str | None = None) -> dict[str, Any]:
    """Per kind, the current state of every scope the control loop has decided about
    (run budgets only while exceeded), newest change first."""
    scope = scope.narrow(tenant)
    where = Where().scope(scope).equals("tenant", tenant)
    where.add("kind IN {kinds:Array(String)}", kinds=list(KINDS))
    found = rows(client, (
        "SELECT kind, scope, rule, any(tenant) AS owner, max(version) AS latest, "
        "argMax(state, version) AS state, argMax(previous_state, version) AS previous_state, "
        "argMax(ts, version) AS since, argMax(reason, version) AS reason, "
        "argMax(policy_version, version) AS policy_version, "
        "argMax(details, version) AS details FROM control_signals FINAL "
        f"WHERE {where.sql()} GROUP BY kind, scope, rule "
        f"ORDER BY since DESC LIMIT {MAX_ROWS}"), where.params)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for row in found:
        try:
            details = json.loads(row.pop("details") or "{}")
        except ValueError:
            details = {}
        row["tenant"], row["version"] = row.pop("owner"), row.pop("latest")
        row["by"] = details.get("by", "") if isinstance(details, dict) else ""
        if row["kind"] == "budget" and row["state"] != "exceeded":
            continue
        row["explain"] = row["scope"] if row["kind"] != "budget" else \
            "/".join(row["scope"].split("/")[:2])
        out[row["kind"]].append(row)
    return {"breakers": out["breaker"], "safe_modes": out["safe_mode"],
            "overrides": out["override"], "budgets": out["budget"]}
