-- Windowed aggregates from agent.metrics. An open window is published several times;
-- the newest emission wins (ReplacingMergeTree on emitted_at), so FINAL reads the
-- latest value of every window even when a restarted worker re-counts its revisions.
CREATE TABLE IF NOT EXISTS {db}.metrics
(
    kind            LowCardinality(String),
    tenant          LowCardinality(String),
    agent           LowCardinality(String),
    subject         LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    revision        UInt64,
    final           Bool,
    emitted_at      DateTime64(6, 'UTC'),
    values          Map(LowCardinality(String), Float64),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (kind, tenant, agent, subject, window_start)
TTL toDateTime(window_start) + INTERVAL {metrics_ttl_days} DAY
