-- Copies of an event that is already a leaf (a producer retry at another offset): the sink
-- does not store them in events (docs/integrity.md, "Signed checkpoints"), so it records
-- where they were and which leaf they repeat. `agentledger reconcile` counts these offsets
-- as accounted for: each landed, once, as its first copy. Written with the leaves, before
-- the log's state and the offset commit; a re-judged batch writes the same rows.
CREATE TABLE IF NOT EXISTS {db}.duplicate_copies
(
    kafka_partition UInt16,
    kafka_offset    UInt64,
    event_id        String,
    landed_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(landed_at)
ORDER BY (kafka_partition, kafka_offset)
TTL toDateTime(landed_at) + INTERVAL {events_ttl_days} DAY;
