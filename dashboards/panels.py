"""Every panel of the four dashboards as data: title, visualization and its SQL.

One definition feeds the Grafana JSON (``build.py``), the test that runs every panel's SQL
against the ClickHouse engine, and the static HTML report (``report.py``). The SQL is the
grafana-clickhouse-datasource dialect: its macros (``$__timeFilter``,
``$__timeInterval``, ``$__interval_s``) and Grafana variables in ``sqlstring`` format
(``${tenant:sqlstring}`` becomes ``'acme','globex'`` with quotes escaped), so a variable
can never break out of its string literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Kind = Literal["timeseries", "table", "stat", "bar", "state", "logs"]

DATASOURCE_UID: Final = "agentledger-clickhouse"
DATASOURCE_TYPE: Final = "grafana-clickhouse-datasource"
INCIDENT_UID: Final = "agentledger-incident"
# A data link from any row that has a trace_id to the run timeline of that trace.
TRACE_LINK: Final = (f"/d/{INCIDENT_UID}/incident-search?var-trace_id=${{__data.fields.trace_id}}"
                     "&${__url_time_range}")

TENANTS: Final = "tenant IN (${tenant:sqlstring})"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: Kind
    sql: str
    description: str = ""
    # Grafana's unit id of the panel's value (ops, percentunit, currencyUSD, ms, short); the
    # report formats axes, labels and tooltips from it too
    unit: str = "short"
    links: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (title, url)
    width: int = 12
    # for the static report: which (label, value) columns of a table to draw as bars
    picture: tuple[str, str] | None = None
    # the report's value axis title; "{interval}" becomes the bucket width ("per 12 s")
    axis: str = ""
    # how the report draws a table whose rows are transitions: "state" draws a timeline
    report_as: Kind | None = None

    @property
    def query_type(self) -> str:
        return {"timeseries": "timeSeries", "logs": "logs"}.get(self.kind, "table")

    @property
    def format(self) -> int:
        """The plugin's Format enum: 0 time series, 1 table, 2 logs."""
        return {"timeseries": 0, "logs": 2}.get(self.kind, 1)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = ("tenant",)


OPERATIONS = Dashboard(
    "agentledger-operations", "Agent operations",
    "Is the fleet healthy right now: volume, success, spend, tool errors, breakers, safe mode.",
    (
        Panel("Events per second", "timeseries",
              "SELECT $__timeInterval(ts) AS time, count() / $__interval_s AS events_per_s "
              f"FROM events FINAL WHERE $__timeFilter(ts) AND {TENANTS} "
              "GROUP BY time ORDER BY time", unit="ops", axis="events/s"),
        Panel("Task success rate", "timeseries",
              "SELECT $__timeInterval(finished_at) AS time, "
              "countIf(outcome = 'success') / count() AS success_rate "
              f"FROM daily_economics FINAL WHERE $__timeFilter(finished_at) AND {TENANTS} "
              "GROUP BY time ORDER BY time", unit="percentunit", axis="tasks succeeded (%)"),
        Panel("Cost per minute", "timeseries",
              "SELECT $__timeInterval(ts) AS time, sum(cost_usd) * 60 / $__interval_s "
              "AS usd_per_minute FROM events FINAL WHERE event_type = 'model.call' "
              f"AND $__timeFilter(ts) AND {TENANTS} GROUP BY time ORDER BY time",
              unit="currencyUSD", axis="model spend (USD per minute)"),
        Panel("Tool error rate per tool", "timeseries",
              "SELECT $__timeInterval(minute) AS time, tool, "
              "(uniqExactMerge(errors) + uniqExactMerge(timeouts)) / uniqExactMerge(calls) "
              f"AS error_rate FROM tool_health_minute WHERE $__timeFilter(minute) AND {TENANTS} "
              "GROUP BY time, tool ORDER BY time, tool", unit="percentunit",
              axis="calls failed or timed out (%)"),
        Panel("Circuit breakers", "state",
              "SELECT ts AS time, scope, state FROM control_signals FINAL "
              f"WHERE kind = 'breaker' AND $__timeFilter(ts) AND {TENANTS} ORDER BY time",
              "Each breaker's state over time (CLOSED, OPEN, HALF_OPEN)."),
        Panel("Safe mode, with reasons", "table",
              "SELECT ts AS time, scope, previous_state AS was, state, reason, policy_version "
              f"FROM control_signals FINAL WHERE kind IN ('safe_mode', 'override') "
              f"AND $__timeFilter(ts) AND {TENANTS} ORDER BY time DESC LIMIT 200",
              "Each agent's mode over time (normal, read_only, halted) and why it changed.",
              report_as="state"),
        Panel("Dead-letter rate", "timeseries",
              "SELECT $__timeInterval(received_at) AS time, reason, "
              "count() / $__interval_s AS rejected_per_s FROM rejected_events FINAL "
              "WHERE $__timeFilter(received_at) GROUP BY time, reason ORDER BY time",
              "Input the sink refused (any tenant: rejected input has no trusted tenant).",
              unit="ops", width=24, axis="rejected messages/s"),
        Panel("Pipeline heartbeats", "timeseries",
              "SELECT $__timeInterval(ts) AS time, component, "
              "count() * 60 / $__interval_s AS reports_per_minute FROM heartbeats "
              "WHERE component IN ('sink', 'streams') AND $__timeFilter(ts) "
              "GROUP BY time, component ORDER BY time, component",
              "Liveness reports of the sink and the stream workers (the control loop), any "
              "tenant. A line that drops to nothing is a component that went silent.",
              width=24, axis="heartbeats per minute"),
        Panel("Release gate: versions side by side", "table",
              "SELECT agent, agent_version, count() AS runs, "
              "countIf(outcome = 'success') / count() AS success_rate, "
              # the 95 % Wilson score interval of the success rate (z = 1.96)
              "(success_rate + 1.9208 / runs - 1.96 * sqrt(success_rate * (1 - success_rate) "
              "/ runs + 0.9604 / (runs * runs))) / (1 + 3.8416 / runs) AS success_low_95, "
              "(success_rate + 1.9208 / runs + 1.96 * sqrt(success_rate * (1 - success_rate) "
              "/ runs + 0.9604 / (runs * runs))) / (1 + 3.8416 / runs) AS success_high_95, "
              "sum(JSONExtractFloat(body, 'totals', 'cost_usd')) "
              "/ nullIf(countIf(outcome = 'success'), 0) AS cost_per_success_usd, "
              "quantile(0.95)(latency_ms) AS p95_latency_ms FROM events FINAL "
              f"WHERE event_type = 'run.finished' AND $__timeFilter(ts) AND {TENANTS} "
              "GROUP BY agent, agent_version ORDER BY agent, runs DESC LIMIT 200",
              "Each agent version's finished runs in the time range: success rate with its "
              "95 % Wilson interval, cost per successful task, p95 latency. Intervals that "
              "overlap are no verdict: `agentledger gate --baseline agent_version=A "
              "--candidate agent_version=B` (GET /v1/gate) tests every metric, controls "
              "the multiple comparisons and exits 0/1/2/3 (docs/release-gate.md). The "
              "canary's decisions on live versions show in 'Safe mode, with reasons' "
              "(scope tenant/agent/version/V, rule canary).",
              unit="percentunit", width=24, picture=("agent_version", "success_rate"),
              axis="tasks succeeded (%)"),
    ),
)

TOOLS = Dashboard(
    "agentledger-tools", "Tool reliability",
    "Which tools fail, how slowly, how often the breakers trip and the policies block.",
    (
        Panel("Error rate per tool", "table",
              "SELECT tool, uniqExactMerge(calls) AS calls, uniqExactMerge(errors) AS errors, "
              "uniqExactMerge(timeouts) AS timeouts, (errors + timeouts) / calls AS error_rate, "
              "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)[2] AS p95_ms "
              f"FROM tool_health_minute WHERE $__timeFilter(minute) AND {TENANTS} "
              "GROUP BY tool ORDER BY error_rate DESC", picture=("tool", "error_rate"),
              unit="percentunit", axis="calls failed or timed out (%)"),
        Panel("Timeouts per tool", "timeseries",
              "SELECT $__timeInterval(minute) AS time, tool, uniqExactMerge(timeouts) AS timeouts "
              f"FROM tool_health_minute WHERE $__timeFilter(minute) AND {TENANTS} "
              "GROUP BY time, tool ORDER BY time, tool", axis="timeouts per {interval}"),
        Panel("p95 latency per tool", "timeseries",
              "SELECT $__timeInterval(minute) AS time, tool, "
              "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)[2] AS p95_ms "
              f"FROM tool_health_minute WHERE $__timeFilter(minute) AND {TENANTS} "
              "GROUP BY time, tool ORDER BY time, tool", unit="ms", axis="p95 latency (ms)"),
        Panel("Breaker trips", "bar",
              "SELECT scope, countIf(state = 'OPEN') AS trips FROM control_signals FINAL "
              f"WHERE kind = 'breaker' AND $__timeFilter(ts) AND {TENANTS} "
              "GROUP BY scope ORDER BY trips DESC", axis="times opened"),
        Panel("Policy blocks", "timeseries",
              "SELECT $__timeInterval(ts) AS time, action, count() AS denials FROM events FINAL "
              "WHERE event_type = 'policy.decision' AND decision = 'deny' "
              f"AND $__timeFilter(ts) AND {TENANTS} GROUP BY time, action ORDER BY time",
              axis="denials per {interval}"),
        Panel("Policy escalations", "timeseries",
              "SELECT $__timeInterval(ts) AS time, action, count() AS escalations "
              "FROM events FINAL WHERE event_type = 'policy.decision' AND decision = 'escalate' "
              f"AND $__timeFilter(ts) AND {TENANTS} GROUP BY time, action ORDER BY time",
              axis="escalations per {interval}"),
        Panel("Approval latency and SLA breaches", "table",
              "SELECT s.tenant AS tenant, count() AS resolved, "
              "quantile(0.5)(s.latency_ms) / 1000 AS p50_s, "
              "quantile(0.95)(s.latency_ms) / 1000 AS p95_s, "
              "countIf(s.decision = 'expired' OR (r.sla_s > 0 AND s.latency_ms > r.sla_s * 1000)) "
              "AS sla_breaches FROM (SELECT tenant, decision, latency_ms, "
              "JSONExtractString(body, 'approval_id') AS approval_id FROM events FINAL "
              "WHERE event_type = 'approval.resolved' AND $__timeFilter(ts) "
              f"AND {TENANTS}) AS s LEFT JOIN (SELECT JSONExtractString(body, 'approval_id') "
              "AS approval_id, JSONExtractFloat(body, 'sla_s') AS sla_s FROM events FINAL "
              f"WHERE event_type = 'approval.requested' AND {TENANTS}) AS r USING approval_id "
              "GROUP BY tenant ORDER BY tenant", picture=("tenant", "p95_s"), unit="s",
              axis="approval latency p95 (s)"),
        Panel("Top error types", "bar",
              "SELECT concat(tool, ': ', error_type) AS error, count() AS failures "
              "FROM events FINAL WHERE event_type = 'tool.result' AND status IN "
              f"('error', 'timeout') AND $__timeFilter(ts) AND {TENANTS} "
              "GROUP BY error ORDER BY failures DESC LIMIT 10", axis="failed calls"),
    ),
)

ECONOMICS = Dashboard(
    "agentledger-economics", "Unit economics",
    "What a successful task costs and earns, by workflow, tenant and model; budgets; routing.",
    (
        Panel("Cost per successful task by workflow", "bar",
              "SELECT workflow, sum(cost_micros) / 1e6 / countIf(outcome = 'success') "
              f"AS usd_per_success FROM daily_economics FINAL WHERE $__timeFilter(finished_at) "
              f"AND {TENANTS} GROUP BY workflow ORDER BY workflow", unit="currencyUSD",
              axis="USD per successful task"),
        Panel("Cost per successful task by tenant", "bar",
              "SELECT tenant, sum(cost_micros) / 1e6 / countIf(outcome = 'success') "
              f"AS usd_per_success FROM daily_economics FINAL WHERE $__timeFilter(finished_at) "
              f"AND {TENANTS} GROUP BY tenant ORDER BY tenant", unit="currencyUSD",
              axis="USD per successful task"),
        Panel("Cost per successful task by model", "bar",
              "SELECT model, sum(model_cost) / 1e6 / countIf(outcome = 'success') "
              "AS usd_per_success FROM daily_economics FINAL "
              "ARRAY JOIN mapKeys(cost_by_model) AS model, mapValues(cost_by_model) AS model_cost "
              f"WHERE $__timeFilter(finished_at) AND {TENANTS} GROUP BY model ORDER BY model",
              unit="currencyUSD", axis="USD per successful task"),
        Panel("Gross margin by workflow", "table",
              "SELECT e.workflow AS workflow, count() AS runs, "
              "countIf(e.outcome = 'success') AS successes, sum(e.cost_micros) / 1e6 AS cost_usd, "
              "sum(if(e.outcome = 'success', r.revenue_per_success_micros, 0)) / 1e6 "
              "AS revenue_usd, revenue_usd - cost_usd AS gross_margin_usd "
              "FROM daily_economics AS e FINAL ASOF LEFT JOIN (SELECT tenant, workflow, "
              "valid_from, revenue_per_success_micros FROM revenue FINAL) AS r "
              "ON e.tenant = r.tenant AND e.workflow = r.workflow AND e.day >= r.valid_from "
              "WHERE $__timeFilter(e.finished_at) AND e.tenant IN (${tenant:sqlstring}) "
              "GROUP BY workflow ORDER BY workflow", picture=("workflow", "gross_margin_usd"),
              unit="currencyUSD", axis="gross margin (USD)"),
        Panel("Spend against budgets", "table",
              "SELECT s.workflow AS workflow, count() AS runs, sum(s.cost_usd) AS spend_usd, "
              "sum(b.budget_usd) AS budget_usd, spend_usd / budget_usd AS of_budget, "
              "countIf(s.cost_usd > b.budget_usd) AS over_budget "
              "FROM (SELECT tenant, run_id, max(workflow) AS workflow, max(cost_usd) AS cost_usd, "
              "min(started_at) AS started FROM run_summaries GROUP BY tenant, run_id) AS s "
              "INNER JOIN (SELECT tenant, run_id, "
              "JSONExtractFloat(body, 'budget', 'max_cost_usd') AS budget_usd FROM events "
              "WHERE event_type = 'run.started' AND $__timeFilter(ts) AND "
              f"{TENANTS} LIMIT 1 BY event_id) AS b USING (tenant, run_id) "
              "GROUP BY workflow ORDER BY workflow", picture=("workflow", "of_budget"),
              unit="percentunit", axis="spend of budget (%)"),
        Panel("Model routing mix", "timeseries",
              "SELECT $__timeInterval(ts) AS time, model, count() AS calls FROM events FINAL "
              f"WHERE event_type = 'model.call' AND $__timeFilter(ts) AND {TENANTS} "
              "GROUP BY time, model ORDER BY time, model", axis="model calls per {interval}"),
        Panel("Most expensive runs", "table",
              "SELECT finished_at, tenant, workflow, agent, outcome, "
              "cost_micros / 1e6 AS cost_usd, run_id, trace_id FROM daily_economics FINAL "
              "WHERE $__timeFilter(finished_at) "
              f"AND {TENANTS} ORDER BY cost_micros DESC LIMIT 20",
              links=(("Run timeline", TRACE_LINK),), width=24, picture=("run_id", "cost_usd"),
              unit="currencyUSD", axis="run cost (USD)"),
    ),
)

INCIDENT = Dashboard(
    INCIDENT_UID, "Incident search",
    "What happened in one run or trace, and the events around it.",
    (
        Panel("Run timeline", "table",
              "SELECT ts, run_id, seq, event_type, agent, tool, action, mode, tool_version, "
              "status, error_type, outcome, decision, model, latency_ms, cost_usd, span_id, "
              "trace_id FROM events WHERE (run_id = ${run_id:sqlstring} "
              "OR trace_id = ${trace_id:sqlstring}) AND "
              f"{TENANTS} ORDER BY run_id, seq LIMIT 1 BY event_id",
              "Every step of the run (or of each run of the trace), in order.",
              # the console's run page: timeline, verify badge and replay download, behind
              # a browser sign-in (the /v1 routes answer JSON and need a key header)
              links=(("Run page (console)", "${api_url}/console/runs/${__data.fields.run_id}"),
                     ("Trace page (console)",
                      "${api_url}/console/runs/${__data.fields.trace_id}")),
              width=24),
        Panel("Event log", "logs",
              "SELECT ts AS timestamp, concat(event_type, ' ', agent, ' ', tool, ' ', status, ' ', "
              "error_type, ' ', outcome, ' ', decision) AS body, "
              "multiIf(status IN ('error', 'timeout') OR outcome IN ('failure', 'rolled_back'), "
              "'error', decision = 'deny' OR outcome = 'aborted', 'warning', 'info') AS level, "
              "trace_id, run_id FROM events WHERE $__timeFilter(ts) AND "
              f"{TENANTS} AND (agent = ${{agent:sqlstring}} OR ${{agent:sqlstring}} = '') "
              "AND (tool = ${tool:sqlstring} OR ${tool:sqlstring} = '') "
              "ORDER BY ts DESC LIMIT 1 BY event_id LIMIT 500", width=24,
              axis="events per {interval}"),
        Panel("Failed and aborted runs", "table",
              "SELECT finished_at, tenant, agent, workflow, outcome, "
              "cost_micros / 1e6 AS cost_usd, run_id, trace_id FROM daily_economics FINAL "
              "WHERE outcome != 'success' AND "
              f"$__timeFilter(finished_at) AND {TENANTS} AND (agent = ${{agent:sqlstring}} "
              "OR ${agent:sqlstring} = '') ORDER BY finished_at DESC LIMIT 100",
              links=(("Run timeline", TRACE_LINK),), width=24, picture=("run_id", "cost_usd"),
              unit="currencyUSD", axis="run cost (USD)"),
    ),
    variables=("tenant", "agent", "tool", "trace_id", "run_id", "api_url"),
)

DASHBOARDS: Final = (OPERATIONS, TOOLS, ECONOMICS, INCIDENT)
