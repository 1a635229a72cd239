-- One row per run once merged: who ran it, when, how it ended, what it cost.
-- Fed by every event of the run. Each column's aggregate (any/min/max/argMax) is
-- idempotent, so an event the sink redelivers after a crash, or the backfill racing live
-- inserts, changes nothing: the summary is exact without FINAL. Read it with GROUP BY
-- tenant, run_id (or FINAL) since unmerged parts hold partial rows.
CREATE TABLE IF NOT EXISTS {db}.run_summaries
(
    tenant          LowCardinality(String),
    run_id          String,
    trace_id        SimpleAggregateFunction(any, String),
    agent           SimpleAggregateFunction(any, LowCardinality(String)),
    agent_version   SimpleAggregateFunction(any, LowCardinality(String)),
    workflow        SimpleAggregateFunction(max, LowCardinality(String)),
    started_at      SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_event_at   SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    last_seq        SimpleAggregateFunction(max, UInt32),
    outcome         SimpleAggregateFunction(max, LowCardinality(String)),
    cost_usd        SimpleAggregateFunction(max, Float64),
    tool_calls      SimpleAggregateFunction(max, UInt32),
    model_calls     SimpleAggregateFunction(max, UInt32),
    duration_ms     SimpleAggregateFunction(max, Float64),
    tool_errors     AggregateFunction(uniqExact, UUID),
    denials         AggregateFunction(uniqExact, UUID),
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, run_id)
TTL toDateTime(last_event_at) + INTERVAL {summaries_ttl_days} DAY;

-- The migration that creates this view also backfills it from the events already stored.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.run_summaries_mv TO {db}.run_summaries AS
SELECT
    tenant,
    run_id,
    any(trace_id) AS trace_id,
    any(agent) AS agent,
    any(agent_version) AS agent_version,
    max(workflow) AS workflow,
    min(ts) AS started_at,
    max(ts) AS last_event_at,
    max(seq) AS last_seq,
    maxIf(outcome, event_type = 'run.finished') AS outcome,
    maxIf(JSONExtractFloat(body, 'totals', 'cost_usd'), event_type = 'run.finished') AS cost_usd,
    maxIf(toUInt32(JSONExtractUInt(body, 'totals', 'tool_calls')), event_type = 'run.finished')
        AS tool_calls,
    maxIf(toUInt32(JSONExtractUInt(body, 'totals', 'model_calls')), event_type = 'run.finished')
        AS model_calls,
    maxIf(latency_ms, event_type = 'run.finished') AS duration_ms,
    uniqExactStateIf(event_id, event_type = 'tool.result' AND status IN ('error', 'timeout'))
        AS tool_errors,
    uniqExactStateIf(event_id, event_type = 'policy.decision' AND decision = 'deny') AS denials
FROM {db}.events
GROUP BY tenant, run_id
