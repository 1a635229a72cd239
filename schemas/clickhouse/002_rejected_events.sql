-- Input the sink refused, with the reason. Keyed by where it came from, so a rejected
-- message redelivered after a crash is one row to queries (FINAL), like events.
CREATE TABLE IF NOT EXISTS {db}.rejected_events
(
    received_at   DateTime64(3, 'UTC'),
    topic         LowCardinality(String),
    partition     UInt16,
    offset        UInt64,
    message_key   String,
    reason        LowCardinality(String),
    error         String,
    payload_size  UInt32,
    payload       String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL {rejected_ttl_days} DAY
