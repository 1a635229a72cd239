"""Grafana alert rules as code, provisioned from a file beside the dashboards.

Each rule is one ClickHouse query (the same plugin, datasource and macros as the panels)
returning one row per thing that can be wrong (a breaker, an agent, a workflow...): its
text columns become the alert's labels, its one number is reduced (last) and compared
with a threshold. Every rule links to the dashboard panel that shows the problem and to
its section of the README's runbook.

The queries judge "now" by the plugin's ``$__toTime`` and the rule's window by
``$__fromTime`` / ``$__timeFilter``: Grafana sets them from the rule's relative time range,
and the tests set them to a moment of the outage and to a quiet moment, so what fires in
the tests is what fires in Grafana. (Grafana interpolates environment variables in
provisioning files, but not in a query's model, so the macros reach the plugin intact;
labels are interpolated, so no label holds a ``$``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import yaml

from agentledger.dashboards.macros import expand
from agentledger.dashboards.panels import DATASOURCE_UID, ECONOMICS, OPERATIONS, Dashboard
from agentledger.dashboards.results import is_number

# sql → (columns, types, rows), as for the panels
Query = Callable[[str], tuple[list[str], list[str], list[list[Any]]]]

FOLDER: Final = "agentledger"
GROUP: Final = "agentledger"
RUNBOOK: Final = "${AGENTLEDGER_RUNBOOK_URL}"  # Grafana fills it from its environment
DLQ_PER_MINUTE: Final = 60.0  # the same limit as `agentledger health`
SILENT_AFTER_S: Final = 60
STREAMS_MAX_LAG: Final = 10_000  # events; the default of AGENTLEDGER_HEALTH_STREAMS_MAX_LAG
# USD a successful task may cost, per workflow, before someone should look
COST_PER_SUCCESS_LIMIT_USD: Final = {"ticket_triage": 0.05, "crm_update": 0.05,
                                     "refund_with_approval": 0.10}
COST_PER_SUCCESS_DEFAULT_USD: Final = 0.05


def _limits_sql() -> str:
    names = ", ".join(f"'{w}'" for w in COST_PER_SUCCESS_LIMIT_USD)
    values = ", ".join(f"{v:g}" for v in COST_PER_SUCCESS_LIMIT_USD.values())
    return f"transform(workflow, [{names}], [{values}], {COST_PER_SUCCESS_DEFAULT_USD:g})"


@dataclass(frozen=True)
class AlertRule:
    uid: str
    title: str
    sql: str
    threshold: float
    dashboard: Dashboard
    panel: str  # the title of the panel that shows it
    anchor: str  # the README runbook section
    summary: str
    description: str
    window_s: int = 900
    pending: str = "0s"
    severity: str = "page"
    no_data: str = "OK"


RULES: Final = (
    AlertRule(
        "agentledger-breaker-open", "Circuit breaker opened",
        "SELECT tenant, scope, argMaxIf(reason, version, state = 'OPEN') AS reason, "
        "countIf(state = 'OPEN' AND ts >= $__fromTime) "
        "+ (argMax(state, version) != 'CLOSED') AS opened "
        "FROM control_signals FINAL WHERE kind = 'breaker' AND ts <= $__toTime "
        "GROUP BY tenant, scope ORDER BY tenant, scope",
        0, OPERATIONS, "Circuit breakers", "runbook-breaker-open",
        "Breaker {{ $labels.scope }} opened: {{ $labels.reason }}",
        "Calls to this tool are refused until probes pass. Value = openings in the window, "
        "+1 while it is not CLOSED."),
    AlertRule(
        "agentledger-agent-read-only", "Agent degraded to read-only",
        "SELECT tenant, scope AS agent, argMaxIf(reason, version, state IN ('read_only', "
        "'halted')) AS reason, countIf(state IN ('read_only', 'halted') AND ts >= $__fromTime) "
        "+ (argMax(state, version) IN ('read_only', 'halted')) AS degraded "
        "FROM control_signals FINAL WHERE kind IN ('safe_mode', 'override') "
        "AND ts <= $__toTime GROUP BY tenant, agent ORDER BY tenant, agent",
        0, OPERATIONS, "Safe mode, with reasons", "runbook-agent-read-only",
        "Agent {{ $labels.agent }} is in safe mode: {{ $labels.reason }}",
        "Its writes are refused (read_only) or it is stopped (halted). Value = entries into "
        "safe mode in the window, +1 while still degraded."),
    AlertRule(
        "agentledger-budget-exceeded", "Run budget exceeded",
        "SELECT tenant, splitByChar('/', scope)[2] AS agent, count() AS runs_over_budget "
        "FROM control_signals FINAL WHERE kind = 'budget' AND state = 'exceeded' "
        "AND $__timeFilter(ts) GROUP BY tenant, agent ORDER BY tenant, agent",
        0, ECONOMICS, "Spend against budgets", "runbook-budget-exceeded",
        "{{ $labels.agent }} exceeded a run budget",
        "Runs of this agent went past their budget (cost or tool calls) in the last 15 "
        "minutes; the control loop stopped them.", severity="ticket"),
    AlertRule(
        "agentledger-dlq-rate", "Dead-letter rate high",
        "SELECT reason, count() / (dateDiff('second', $__fromTime, $__toTime) / 60) "
        "AS rejected_per_minute "
        "FROM rejected_events FINAL WHERE $__timeFilter(received_at) GROUP BY reason "
        "ORDER BY reason",
        DLQ_PER_MINUTE, OPERATIONS, "Dead-letter rate", "runbook-dlq-rate",
        "{{ $labels.reason }}: more than 60 rejected messages per minute",
        "Producers send input the sink refuses (agent.events.dlq). Value = rejected "
        "messages per minute over the last 5 minutes.", window_s=300, pending="5m"),
    AlertRule(
        "agentledger-pipeline-stalled", "Sink or control loop stalled",
        "SELECT component, if(argMax(status, ts) = 'stalled', 3600, "
        "dateDiff('second', max(ts), $__toTime)) AS silent_s FROM heartbeats "
        "WHERE component IN ('sink', 'streams') AND $__timeFilter(ts) "
        "GROUP BY component ORDER BY component",
        SILENT_AFTER_S, OPERATIONS, "Pipeline heartbeats", "runbook-pipeline-stalled",
        "{{ $labels.component }} has not reported progress",
        "Seconds since the newest heartbeat of any sink or stream worker (3600 while the sink "
        "reports itself stalled). No heartbeat at all in the last hour also alerts.",
        window_s=3600, no_data="Alerting"),
    AlertRule(
        "agentledger-control-loop-behind", "Control loop behind",
        "SELECT instance AS streams_group, argMax(lag_events, ts) AS lag_events "
        "FROM heartbeats WHERE component = 'streams-lag' AND $__timeFilter(ts) "
        "GROUP BY streams_group ORDER BY streams_group",
        STREAMS_MAX_LAG, OPERATIONS, "Pipeline heartbeats", "runbook-control-loop-behind",
        "Stream workers {{ $labels.streams_group }} are behind agent.events",
        "Events on agent.events the stream workers have not committed, as the sink measures "
        "it: breakers and safe mode decide late by that much.", window_s=300, pending="2m"),
    AlertRule(
        "agentledger-cost-per-success", "Cost per successful task above its limit",
        "SELECT tenant, workflow, sum(cost_micros) / 1e6 / greatest(countIf(outcome = "
        f"'success'), 1) / {_limits_sql()} AS of_limit FROM daily_economics FINAL "
        "WHERE $__timeFilter(finished_at) GROUP BY tenant, workflow HAVING count() >= 5 "
        "ORDER BY tenant, workflow",
        1, ECONOMICS, "Cost per successful task by workflow", "runbook-cost-per-success",
        "{{ $labels.workflow }} ({{ $labels.tenant }}) costs more per successful task than "
        "its limit",
        "Value = cost per successful task over the last hour / the workflow's limit "
        "(dashboards/alerts.py: COST_PER_SUCCESS_LIMIT_USD).",
        window_s=3600, pending="15m", severity="ticket"),
)


def _query(rule: AlertRule) -> list[dict[str, Any]]:
    return [
        {"refId": "A", "relativeTimeRange": {"from": rule.window_s, "to": 0},
         "datasourceUid": DATASOURCE_UID,
         "model": {"refId": "A", "datasource": {"type": "grafana-clickhouse-datasource",
                                                 "uid": DATASOURCE_UID},
                   "editorType": "sql", "format": 1, "queryType": "table",
                   "rawSql": rule.sql, "intervalMs": 60_000, "maxDataPoints": 43_200}},
        {"refId": "B", "datasourceUid": "__expr__",
         "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last",
                   "settings": {"mode": "dropNN"},
                   "datasource": {"type": "__expr__", "uid": "__expr__"}}},
        {"refId": "C", "datasourceUid": "__expr__",
         "model": {"refId": "C", "type": "threshold", "expression": "B",
                   "conditions": [{"evaluator": {"type": "gt", "params": [rule.threshold]}}],
                   "datasource": {"type": "__expr__", "uid": "__expr__"}}},
    ]


def panel_id(dashboard: Dashboard, title: str) -> int:
    """The id grafanalib gives the panel (``auto_panel_ids``: 1, 2, ... in order)."""
    titles = [p.title for p in dashboard.panels]
    if title not in titles:
        raise KeyError(f"{dashboard.uid} has no panel {title!r}")
    return titles.index(title) + 1


def rule_spec(rule: AlertRule) -> dict[str, Any]:
    return {
        "uid": rule.uid, "title": rule.title, "condition": "C", "data": _query(rule),
        "noDataState": rule.no_data, "execErrState": "Error", "for": rule.pending,
        "isPaused": False,
        "labels": {"severity": rule.severity, "service": "agentledger"},
        "annotations": {
            "summary": rule.summary, "description": rule.description,
            "runbook_url": f"{RUNBOOK}#{rule.anchor}",
            "__dashboardUid__": rule.dashboard.uid,
            "__panelId__": str(panel_id(rule.dashboard, rule.panel)),
        },
    }


def alerting_yaml() -> str:
    """The provisioning file: one group, evaluated every minute."""
    doc = {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": GROUP, "folder": FOLDER, "interval": "1m",
        "rules": [rule_spec(r) for r in RULES]}]}
    header = ("# Generated by `agentledger dashboards build` from dashboards/alerts.py: "
              "edit that, not this.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


@dataclass(frozen=True)
class Instance:
    """One row of a rule's query: its labels, its value, and whether it fires."""

    labels: dict[str, str]
    value: float
    firing: bool


def evaluate(spec: dict[str, Any], query: Query, at: dt.datetime) -> list[Instance]:
    """One provisioned rule evaluated at ``at`` as Grafana would: query A over the rule's
    relative time range, reduce B (last), threshold C (``gt``)."""
    data = {d["refId"]: d for d in spec["data"]}
    window = data["A"]["relativeTimeRange"]
    start = at - dt.timedelta(seconds=window["from"])
    end = at - dt.timedelta(seconds=window["to"])
    sql = expand(data["A"]["model"]["rawSql"], time_from=start, time_to=end, variables={})
    evaluator = data["C"]["model"]["conditions"][0]["evaluator"]
    assert evaluator["type"] == "gt", evaluator
    columns, types, rows = query(sql)
    if not rows:
        return []  # no data: the rule's noDataState decides
    number = next(i for i, t in enumerate(types) if is_number(t))
    found = []
    for row in rows:
        labels = {c: str(v) for i, (c, v) in enumerate(zip(columns, row, strict=True))
                  if i != number}
        value = float(row[number])
        found.append(Instance(labels, value, value > evaluator["params"][0]))
    return found
