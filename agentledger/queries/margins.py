"""Unit economics and gross margin, from ``daily_economics`` joined to ``revenue``.

Money is integer micro-dollars until the answer is built, so a margin is an exact sum,
and the same figures come out however the rows are grouped. A successful run earns the
revenue rate valid on its day (ASOF join on ``valid_from``); other runs earn nothing and
still cost. Grouped by model, a run's cost is each model's share (``cost_by_model``) and
its revenue is split in proportion to that cost.

Beside the money, ``verified_writes`` gives each tool's verified-write rate over the same
tenants and time (:mod:`agentledger.queries.verification`): a margin earned on writes
nobody confirmed is worth knowing about.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal

from clickhouse_connect.driver.client import Client

from agentledger.queries import verification
from agentledger.queries.common import Forbidden, QueryError, Scope, Where, rows

GroupBy = Literal["workflow", "tenant", "agent", "model", "day"]
GROUP_KEYS: Final = {"workflow": "workflow", "tenant": "tenant", "agent": "agent",
                     "day": "toString(day)", "model": "model"}
MICROS: Final = 1_000_000


def _usd(micros: int | float) -> float:
    return round(micros / MICROS, 6)


def margins(client: Client, scope: Scope, by: GroupBy, since: dt.datetime | None,
            until: dt.datetime | None, *, tenant: str | None = None,
            workflow: str | None = None) -> dict[str, Any]:
    """Runs, successes, cost per successful task and gross margin per group."""
    if by not in GROUP_KEYS:
        raise QueryError(f"cannot group by {by!r}: use one of {', '.join(GROUP_KEYS)}")
    scope = scope.narrow(tenant)
    where = Where().scope(scope, "e.tenant").between("e.finished_at", since, until)
    if since is not None:
        where.add("e.day >= toDate({since:DateTime64(6, 'UTC')})")
    if until is not None:
        where.add("e.day <= toDate({until:DateTime64(6, 'UTC')})")
    if workflow:
        where.add("e.workflow = {workflow:String}", workflow=workflow)
    joined = (
        "SELECT e.tenant AS tenant, e.workflow AS workflow, e.agent AS agent, e.day AS day, "
        "e.outcome AS outcome, e.cost_micros AS cost_micros, e.cost_by_model AS cost_by_model, "
        "if(e.outcome = 'success', r.revenue_per_success_micros, 0) AS revenue_micros "
        "FROM daily_economics AS e FINAL "
        "ASOF LEFT JOIN (SELECT tenant, workflow, valid_from, revenue_per_success_micros "
        "FROM revenue FINAL) AS r "
        "ON e.tenant = r.tenant AND e.workflow = r.workflow AND e.day >= r.valid_from "
        f"WHERE {where.sql()}"
    )
    if by == "model":
        # One row per (run, model): the model's cost and its share of the run's revenue.
        sql = (
            "SELECT model AS key, count() AS runs, countIf(outcome = 'success') AS successes, "
            "sum(model_cost) AS cost_sum, "
            "sum(toInt64(round(if(cost_micros > 0, revenue_micros * model_cost / cost_micros, "
            "revenue_micros / length(cost_by_model))))) AS revenue_sum "
            f"FROM ({joined}) ARRAY JOIN mapKeys(cost_by_model) AS model, "
            "mapValues(cost_by_model) AS model_cost GROUP BY key ORDER BY key"
        )
    else:
        sql = (
            f"SELECT {GROUP_KEYS[by]} AS key, count() AS runs, "
            "countIf(outcome = 'success') AS successes, sum(cost_micros) AS cost_sum, "
            f"sum(revenue_micros) AS revenue_sum FROM ({joined}) GROUP BY key ORDER BY key"
        )
    groups = [_figures(r) for r in rows(client, sql, where.params)]
    totals = _figures({
        "key": "total",
        "runs": sum(g["runs"] for g in groups) if by != "model" else None,
        "successes": sum(g["successes"] for g in groups) if by != "model" else None,
        "cost_sum": sum(g["cost_micros"] for g in groups),
        "revenue_sum": sum(g["revenue_micros"] for g in groups),
    })
    checked = verification.verified_writes(client, scope, since, until)
    verified = [{"tool": key[0], **figures} for key, figures in sorted(checked.items())]
    return {"by": by, "since": since, "until": until, "groups": groups, "total": totals,
            "verified_writes": verified}


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    runs, successes = row["runs"], row["successes"]
    cost, revenue = int(row["cost_sum"]), int(row["revenue_sum"])
    margin = revenue - cost
    return {
        "key": row["key"],
        "runs": runs,
        "successes": successes,
        "success_rate": round(successes / runs, 6) if runs else None,
        "cost_usd": _usd(cost),
        # By model, runs overlap between groups, so no total per-success figure exists.
        "cost_per_success_usd": _usd(cost / successes) if successes else None,
        "revenue_usd": _usd(revenue),
        "gross_margin_usd": _usd(margin),
        "gross_margin_pct": round(100 * margin / revenue, 4) if revenue else None,
        "cost_micros": cost,
        "revenue_micros": revenue,
    }


def set_revenue(client: Client, scope: Scope, *, tenant: str, workflow: str,
                revenue_per_success_usd: float, valid_from: dt.date, note: str = "") -> None:
    """Record what a successful task of ``workflow`` earns from ``valid_from`` on."""
    if scope.tenants is not None:
        raise Forbidden("setting revenue needs an operator key")
    if revenue_per_success_usd < 0:
        raise QueryError("revenue per success must not be negative")
    client.insert("revenue", [[tenant, workflow, valid_from,
                               round(revenue_per_success_usd * MICROS), note]],
                  column_names=["tenant", "workflow", "valid_from",
                                "revenue_per_success_micros", "note"])


def revenue_rates(client: Client, scope: Scope) -> list[dict[str, Any]]:
    where = Where().scope(scope)
    found = rows(client, "SELECT tenant, workflow, valid_from, revenue_per_success_micros, note, "
                         f"updated_at FROM revenue FINAL WHERE {where.sql()} "
                         "ORDER BY tenant, workflow, valid_from", where.params)
    for row in found:
        row["revenue_per_success_usd"] = _usd(row.pop("revenue_per_success_micros"))
    return found
