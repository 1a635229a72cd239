-- Every stored copy of every approval.requested event, keyed by approval id, so "the first
-- request stored for an id" (queries/approvals.py: whatever tenant a later request with
-- the same id claims) is a primary-key lookup instead of a scan of every request's body.
-- Plain MergeTree on purpose: a redelivered copy is kept, exactly as the events table's
-- physical copies are read there (landing order decides, never FINAL).
CREATE TABLE IF NOT EXISTS {db}.approval_requests
(
    approval_id     String,
    event_id        UUID,
    tenant          LowCardinality(String),
    agent           LowCardinality(String),
    run_id          String,
    ts              DateTime64(6, 'UTC'),
    queue           String,
    action          String,
    reason          String,
    required        UInt32,
    sla_s           Float64,
    expires_in_s    Float64,
    args            String CODEC(ZSTD(3)),
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = MergeTree
ORDER BY (approval_id, ingested_at, kafka_partition, kafka_offset, ts, event_id)
TTL toDateTime(ts) + INTERVAL {events_ttl_days} DAY;

-- The migration that creates this view also backfills it from the events already stored.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.approval_requests_mv TO {db}.approval_requests AS
SELECT
    JSONExtractString(body, 'approval_id') AS approval_id,
    event_id,
    tenant,
    agent,
    run_id,
    ts,
    JSONExtractString(body, 'approver') AS queue,
    JSONExtractString(body, 'action') AS action,
    JSONExtractString(body, 'reason') AS reason,
    JSONExtractUInt(body, 'approvals_required') AS required,
    JSONExtractFloat(body, 'sla_s') AS sla_s,
    JSONExtractFloat(body, 'expires_in_s') AS expires_in_s,
    JSONExtractRaw(body, 'args') AS args,
    ingested_at,
    kafka_partition,
    kafka_offset
FROM {db}.events
WHERE event_type = 'approval.requested';
