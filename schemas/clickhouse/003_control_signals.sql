-- Every breaker, safe-mode, budget and override transition published on agent.control
-- (heartbeats are not landed). One transition is (kind, scope, rule, version): a signal
-- re-sent after a worker crash has the same key, so FINAL shows it once.
CREATE TABLE IF NOT EXISTS {db}.control_signals
(
    ts              DateTime64(6, 'UTC'),
    emitted_at      DateTime64(3, 'UTC'),
    tenant          LowCardinality(String),
    kind            LowCardinality(String),
    scope           String,
    rule            LowCardinality(String),
    state           LowCardinality(String),
    previous_state  LowCardinality(String),
    version         UInt64,
    reason          String,
    policy_version  LowCardinality(String),
    triggered_by    Array(String),
    fallback        LowCardinality(String),
    details         String,
    raw             String CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, kind, scope, rule, version)
TTL toDateTime(ts) + INTERVAL {control_ttl_days} DAY
