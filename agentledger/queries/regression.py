"""Regression sets' SQL: export real runs as cases, read a label's runs of a set back.

Both read ``events FINAL`` (a redelivered event counts once), scoped to the caller's
tenants, every value a bound parameter. A set belongs to one tenant: a key that reads
several must name it. Runs that are themselves regression runs (run id
``regression:...``) are never exported. The statistics are
:mod:`agentledger.streams.regression`'s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import QueryError, Scope, Where, rows
from agentledger.streams.regression import (
    RUN_ID_PREFIX,
    SET_FORMAT,
    SetError,
    check_label,
    run_id_prefix,
    set_id_of,
)

MAX_CASES: Final = 10_000
_EXPORT: Final = (
    "SELECT run_id, any(agent) AS agent, any(agent_version) AS agent_version, "
    "anyIf(JSONExtractString(body, 'input_ref'), event_type = 'run.started') AS input_ref, "
    "anyIf(JSONExtractString(body, 'inputs_hash'), event_type = 'run.started') "
    "AS inputs_hash, "
    "maxIf(outcome, event_type = 'run.finished') AS outcome, "
    "maxIf(JSONExtractFloat(body, 'totals', 'cost_usd'), event_type = 'run.finished') "
    "AS cost_usd, "
    "arraySort(groupUniqArrayIf(tool, event_type = 'tool.call')) AS tools, "
    "maxIf(ts, event_type = 'run.finished') AS finished_at, "
    "countIf(event_type = 'run.started') AS started "
    "FROM events FINAL WHERE {events_where} "
    "AND run_id IN (SELECT run_id FROM events FINAL WHERE {finished_where}) "
    "GROUP BY run_id HAVING started > 0 "
    "ORDER BY finished_at DESC, run_id LIMIT {{n:UInt32}}"
)


def _tenant(scope: Scope, tenant: str | None) -> str:
    narrowed = scope.narrow(tenant)
    if tenant is not None:
        return tenant
    if narrowed.tenants is not None and len(narrowed.tenants) == 1:
        return next(iter(narrowed.tenants))
    raise QueryError("a regression set belongs to one tenant: pass tenant=")


def export(client: Client, scope: Scope, *, workflow: str, n: int,
           outcome: str | None = None, since: dt.datetime | None = None,
           until: dt.datetime | None = None, tenant: str | None = None) -> dict[str, Any]:
    """The newest ``n`` finished runs of ``workflow`` (optionally of one outcome) as a
    regression set: each case is the run's input reference and hash, outcome, tools."""
    if not 1 <= n <= MAX_CASES:
        raise QueryError(f"n: between 1 and {MAX_CASES}")
    owner = _tenant(scope, tenant)
    finished = Where().add("tenant = {tenant:String}", tenant=owner).add(
        "event_type = 'run.finished'").add("workflow = {workflow:String}", workflow=workflow)
    finished.add(f"NOT startsWith(run_id, '{RUN_ID_PREFIX}:')").between("ts", since, until)
    if outcome is not None:
        finished.add("outcome = {outcome:String}", outcome=outcome)
    events = Where().add("tenant = {tenant:String}", tenant=owner)
    if since is not None:
        events.add("ts >= {since:DateTime64(6, 'UTC')} - INTERVAL 1 DAY")
    sql = _EXPORT.format(events_where=events.sql(), finished_where=finished.sql())
    found = rows(client, sql, {**finished.params, **events.params, "n": n})
    found.reverse()  # oldest first: case ids follow the order the runs happened
    cases = [{"case_id": str(i), "run_id": r["run_id"], "agent": r["agent"],
              "agent_version": r["agent_version"], "input_ref": r["input_ref"] or None,
              "inputs_hash": r["inputs_hash"], "outcome": r["outcome"],
              "tools": list(r["tools"]), "cost_usd": round(float(r["cost_usd"]), 10)}
             for i, r in enumerate(found)]
    if not cases:
        raise QueryError(f"no finished runs of workflow {workflow!r} for tenant {owner!r} "
                         "in the window")
    return {"format": SET_FORMAT, "set_id": set_id_of(cases), "tenant": owner,
            "workflow": workflow, "created_at": dt.datetime.now(dt.UTC),
            "source": {"n": n, "outcome": outcome, "since": since, "until": until},
            "cases": cases}


def results(client: Client, scope: Scope, *, set_id: str, label: str,
            tenant: str | None = None) -> dict[str, Any]:
    """Each case's outcome and cost under ``label`` (the runs ``regression run`` recorded
    for set ``set_id``). A case run twice under one label counts its newest finish and is
    named in ``rerun``."""
    try:
        check_label(label)
    except SetError as exc:
        raise QueryError(str(exc)) from None
    owner = _tenant(scope, tenant)
    prefix = run_id_prefix(set_id, label)
    sql = ("SELECT substring(run_id, {skip:UInt32}) AS case_id, "
           "argMax(outcome, ts) AS outcome, "
           "argMax(JSONExtractFloat(body, 'totals', 'cost_usd'), ts) AS cost_usd, "
           "count() AS finishes FROM events FINAL WHERE tenant = {tenant:String} "
           "AND event_type = 'run.finished' AND startsWith(run_id, {prefix:String}) "
           "GROUP BY case_id ORDER BY case_id")
    found = rows(client, sql, {"skip": len(prefix) + 1, "tenant": owner, "prefix": prefix})
    return {"set_id": set_id, "label": label, "tenant": owner,
            "cases": {r["case_id"]: {"outcome": r["outcome"],
                                     "cost_usd": float(r["cost_usd"])} for r in found},
            "rerun": [r["case_id"] for r in found if r["finishes"] > 1]}
