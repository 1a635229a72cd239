-- Tool calls per (tenant, minute, tool, agent) for ops dashboards and `agentledger health`.
-- Counts are uniqExact over event ids, so a redelivered event is counted once: the
-- per-minute figures are exact without FINAL. Latency quantiles come from a t-digest state;
-- a duplicate adds its latency twice, which moves an approximate quantile negligibly.
CREATE TABLE IF NOT EXISTS {db}.tool_health_minute
(
    tenant      LowCardinality(String),
    minute      DateTime('UTC'),
    tool        LowCardinality(String),
    agent       LowCardinality(String),
    calls       AggregateFunction(uniqExact, UUID),
    errors      AggregateFunction(uniqExact, UUID),
    timeouts    AggregateFunction(uniqExact, UUID),
    rejected    AggregateFunction(uniqExact, UUID),
    latency     AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute, tool, agent)
TTL minute + INTERVAL {health_ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tool_health_minute_mv TO {db}.tool_health_minute AS
SELECT
    tenant,
    toStartOfMinute(ts) AS minute,
    tool,
    agent,
    uniqExactState(event_id) AS calls,
    uniqExactStateIf(event_id, status = 'error') AS errors,
    uniqExactStateIf(event_id, status = 'timeout') AS timeouts,
    uniqExactStateIf(event_id, status = 'rejected') AS rejected,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency
FROM {db}.events
WHERE event_type = 'tool.result'
GROUP BY tenant, minute, tool, agent
