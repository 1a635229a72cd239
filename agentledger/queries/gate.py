"""The release gate's SQL: each cohort's finished runs, counted into an ``Arm``.

Runs are folded from ``events FINAL`` (a redelivered event counts once). A run belongs to
a cohort by what it ran with: ``agent_version`` (every event), ``prompt_version`` and
``policy_version`` (its ``run.started``), ``model`` (any of its model calls) and
``tool_version`` (any of its tool calls), ``release`` (its env ``release:<label>``, the
runs ``agentledger regression run`` records). Only runs that finished in the window count; the
events of such a run are read from one day before the window so a run that started
before it keeps its ``run.started``. Cost and latency samples are capped per arm
(``groupArraySample``, seeded) so one gate call stays bounded however much is stored; the
counts are exact. The statistics are :mod:`agentledger.streams.release_gate`'s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import QueryError, Scope, Where, rows
from agentledger.streams.release_gate import (
    Arm,
    CohortError,
    GateConfig,
    GateConfigError,
    evaluate,
    parse_cohort,
    parse_config,
)

# Cost and latency samples per arm: plenty for Mann-Whitney (a 10 % shift in cost is
# found at far fewer) and a p95; a reservoir of 50,000 made the sampling the costliest
# part of a gate over 10M events (bench/bench_gate.py gate_10m_s).
SAMPLE_CAP: Final = 10_000
_COLUMN: Final = {
    "agent_version": "agent_version = {%s:String}",
    "prompt_version": "prompt_version = {%s:String}",
    "policy_version": "policy_version = {%s:String}",
    "model": "has(models, {%s:String})",
    "tool_version": "has(tool_versions, {%s:String})",
    # a release label: the runs `agentledger regression run --label` recorded (env
    # release:<label>, agentledger.streams.regression.release_env)
    "release": "env = concat('release:', {%s:String})",
}
# What a cohort key needs from each run, read only when a cohort uses it: a run's body
# (JSON, compressed) is the costliest column to read, and most gates select by version.
_NEEDS: Final = {
    "prompt_version": "anyIf(JSONExtractString(body, 'prompt_version'), "
                      "event_type = 'run.started') AS prompt_version, ",
    "policy_version": "anyIf(JSONExtractString(body, 'policy_version'), "
                      "event_type = 'run.started') AS policy_version, ",
    "model": "groupUniqArrayIf(model, event_type = 'model.call') AS models, ",
    "tool_version": "groupUniqArrayIf(tool_version, event_type = 'tool.call') AS tool_versions, ",
    "release": "any(env) AS env, ",
}
# One pass over the window's events, grouped by run, kept when the run finished in the
# window (HAVING): a semi-join on the finished runs' ids (IN (SELECT ...)) built a set of
# every run id first and was 5x slower on 10M events (bench/bench_gate.py gate_10m_s). A
# run's cost is the sum of its model calls' cost_usd, which is what the SDK's and the
# OTLP intake's run.finished totals.cost_usd add up, read without parsing the body.
_PER_RUN: Final = (
    "SELECT tenant, run_id, any(agent_version) AS agent_version, {needs}"
    "maxIf(workflow, event_type IN ('run.started', 'run.finished')) AS workflow, "
    "maxIf(outcome, event_type = 'run.finished') AS outcome, "
    "sumIf(cost_usd, event_type = 'model.call') AS cost_usd, "
    "maxIf(latency_ms, event_type = 'run.finished') AS duration_ms, "
    "countIf(event_type = 'tool.result') AS tool_results, "
    "countIf(event_type = 'tool.result' AND status IN ('error', 'timeout')) AS tool_errors, "
    "countIf(event_type = 'policy.decision' AND decision = 'deny') > 0 AS blocked, "
    "(countIf(event_type = 'rollback') > 0 OR outcome = 'rolled_back') AS rolled_back, "
    "maxIf(ts, event_type = 'run.finished') AS finished_at, "
    "countIf(event_type = 'run.finished') AS finishes "
    "FROM events FINAL WHERE {events_where} "
    "GROUP BY tenant, run_id HAVING {finished_having}"
)


def _arm_columns(prefix: str, cond: str) -> str:
    return (
        f"countIf({cond}) AS {prefix}_runs, "
        f"countIf({cond} AND outcome = 'success') AS {prefix}_successes, "
        f"sumIf(cost_usd, {cond}) AS {prefix}_cost, "
        f"sumIf(tool_results, {cond}) AS {prefix}_tool_results, "
        f"sumIf(tool_errors, {cond}) AS {prefix}_tool_errors, "
        f"countIf({cond} AND blocked) AS {prefix}_blocked, "
        f"countIf({cond} AND rolled_back) AS {prefix}_rollbacks, "
        f"groupArraySampleIf({SAMPLE_CAP}, 1)(cost_usd, {cond} AND outcome = 'success') "
        f"AS {prefix}_success_costs, "
        f"groupArraySampleIf({SAMPLE_CAP}, 2)(duration_ms, {cond}) AS {prefix}_durations"
    )


def _condition(cohort: dict[str, str], prefix: str, params: dict[str, Any]) -> str:
    parts = []
    for key, value in sorted(cohort.items()):
        name = f"{prefix}_{key}"
        params[name] = value
        parts.append(_COLUMN[key] % name)
    return "(" + " AND ".join(parts) + ")"


def cohorts(baseline: str, candidate: str) -> tuple[dict[str, str], dict[str, str]]:
    """Both cohorts parsed; a QueryError (400) naming which one is wrong and why."""
    parsed = []
    for name, text in (("baseline", baseline), ("candidate", candidate)):
        try:
            parsed.append(parse_cohort(text))
        except CohortError as exc:
            raise QueryError(f"{name}: {exc}") from None
    if parsed[0] == parsed[1]:
        raise QueryError("baseline and candidate are the same cohort: compare two versions")
    return parsed[0], parsed[1]


def config_from(text: str | None) -> GateConfig | None:
    """A gate.yaml sent with the request, or None for the packaged default."""
    if text is None or text == "":
        return None
    try:
        return parse_config(text, "config")
    except GateConfigError as exc:
        raise QueryError(str(exc)) from None


def _arm(row: dict[str, Any], prefix: str) -> Arm:
    return Arm(runs=int(row[f"{prefix}_runs"]), successes=int(row[f"{prefix}_successes"]),
               cost_usd=float(row[f"{prefix}_cost"]),
               tool_results=int(row[f"{prefix}_tool_results"]),
               tool_errors=int(row[f"{prefix}_tool_errors"]),
               blocked_runs=int(row[f"{prefix}_blocked"]),
               rollback_runs=int(row[f"{prefix}_rollbacks"]),
               success_costs=list(row[f"{prefix}_success_costs"]),
               durations_ms=list(row[f"{prefix}_durations"]))


def gate(client: Client, scope: Scope, *, baseline: str, candidate: str,
         since: dt.datetime | None, until: dt.datetime | None = None,
         workflow: str | None = None, tenant: str | None = None,
         config: str | None = None) -> dict[str, Any]:
    """The gate's verdict for ``candidate`` against ``baseline`` over the caller's runs."""
    base_cohort, cand_cohort = cohorts(baseline, candidate)
    gate_config = config_from(config)
    scope = scope.narrow(tenant)
    finished = Where().add("finishes > 0").between("finished_at", since, until)
    events = Where().scope(scope)
    if since is not None:
        events.add("ts >= {since:DateTime64(6, 'UTC')} - INTERVAL 1 DAY")
    if until is not None:
        events.add("ts < {until:DateTime64(6, 'UTC')}")
    params = {**finished.params, **events.params}
    outer = Where()
    if workflow:
        outer.add("workflow = {workflow:String}", workflow=workflow)
    base_cond = _condition(base_cohort, "b", params)
    cand_cond = _condition(cand_cohort, "c", params)
    params.update(outer.params)
    needs = "".join(_NEEDS[key] for key in sorted({*base_cohort, *cand_cohort})
                    if key in _NEEDS)
    per_run = _PER_RUN.format(needs=needs, events_where=events.sql(),
                              finished_having=finished.sql())
    sql = (f"SELECT {_arm_columns('b', base_cond)}, {_arm_columns('c', cand_cond)}, "
           f"countIf({base_cond} AND {cand_cond}) AS overlap "
           f"FROM ({per_run}) WHERE {outer.sql()}")
    row = rows(client, sql, params)[0]
    if row["overlap"]:
        raise QueryError(f"{row['overlap']} runs match both cohorts: make them disjoint "
                         "(e.g. add agent_version=... to each)")
    result = evaluate(_arm(row, "b"), _arm(row, "c"), gate_config).as_dict()
    return {"baseline": baseline, "candidate": candidate, "workflow": workflow,
            "since": since, "until": until, **result}
