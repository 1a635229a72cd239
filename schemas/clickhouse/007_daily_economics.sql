-- One row per finished run, ordered by (tenant, day, workflow): unit economics and margins
-- for any set of days are a range scan of this table. Money is integer micro-dollars, so
-- sums are exact. Fed by run.finished only; the run's (tenant, day, workflow, agent,
-- run_id) key makes a redelivered run.finished replace itself (read with FINAL).
-- Aggregating per day at insert time would double-count redelivered events; keeping a
-- row per run is what makes the figures exact under at-least-once delivery.
CREATE TABLE IF NOT EXISTS {db}.daily_economics
(
    tenant          LowCardinality(String),
    day             Date,
    workflow        LowCardinality(String),
    agent           LowCardinality(String),
    run_id          String,
    trace_id        String,
    finished_at     DateTime64(6, 'UTC'),
    outcome         LowCardinality(String),
    cost_micros     Int64,
    cost_by_model   Map(LowCardinality(String), Int64),
    tool_calls      UInt32,
    model_calls     UInt32,
    duration_ms     Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day, workflow, agent, run_id)
TTL day + INTERVAL {economics_ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_economics_mv TO {db}.daily_economics AS
SELECT
    tenant,
    toDate(ts) AS day,
    workflow,
    agent,
    run_id,
    trace_id,
    ts AS finished_at,
    outcome,
    toInt64(round(JSONExtractFloat(body, 'totals', 'cost_usd') * 1000000)) AS cost_micros,
    CAST(mapApply((model, usd) -> (model, toInt64(round(usd * 1000000))),
                  JSONExtract(body, 'totals', 'cost_by_model', 'Map(String, Float64)')),
         'Map(LowCardinality(String), Int64)') AS cost_by_model,
    toUInt32(JSONExtractUInt(body, 'totals', 'tool_calls')) AS tool_calls,
    toUInt32(JSONExtractUInt(body, 'totals', 'model_calls')) AS model_calls,
    latency_ms AS duration_ms
FROM {db}.events
WHERE event_type = 'run.finished'
