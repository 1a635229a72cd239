-- Every event, stored once per event_id as far as queries can tell.
-- ReplacingMergeTree on (tenant, ts, event_id): a redelivered event has the same key
-- (ts and tenant are part of the event), so merges keep one copy and FINAL hides the
-- rest before merges run. `raw` keeps the exact JSON that crossed Kafka: the hash chain
-- is verified over it, and replay bundles are built from it.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id        UUID,
    event_type      LowCardinality(String),
    schema_version  UInt8,
    ts              DateTime64(6, 'UTC'),
    tenant          LowCardinality(String),
    workspace       LowCardinality(String),
    agent           LowCardinality(String),
    agent_version   LowCardinality(String),
    principal       LowCardinality(String),
    on_behalf_of    String,
    env             LowCardinality(String),
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    run_id          String,
    seq             UInt32,
    workflow        LowCardinality(String),
    tool            LowCardinality(String),
    action          String,
    mode            LowCardinality(String),
    tool_version    LowCardinality(String),
    status          LowCardinality(String),
    error_type      LowCardinality(String),
    error           String,
    outcome         LowCardinality(String),
    provider        LowCardinality(String),
    model           LowCardinality(String),
    tokens_in       UInt32,
    tokens_out      UInt32,
    cost_usd        Float64,
    latency_ms      Float64,
    decision        LowCardinality(String),
    prev_hash       String,
    hash            String,
    sig             String,
    body            String CODEC(ZSTD(3)),
    raw             String CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_run run_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, event_id)
TTL toDateTime(ts) + INTERVAL {events_ttl_days} DAY
SETTINGS index_granularity = 8192
