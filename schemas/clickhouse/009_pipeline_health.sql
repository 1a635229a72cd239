-- A rejected message's sha256, so a DLQ record truncated to fit is still tied to what came in.
ALTER TABLE {db}.rejected_events
    ADD COLUMN IF NOT EXISTS payload_sha256 String DEFAULT '' AFTER payload_size;

-- Liveness and progress of every part of the pipeline, one row per report: the sink's own
-- status (every few seconds), each stream worker's heartbeat (landed from agent.control),
-- the stream workers' lag as the sink measures it, and the supervisor's children.
-- `agentledger health`, /v1/health and the agent-operations dashboard read the newest row
-- per (component, instance). Reports are at-least-once; a repeated row is harmless, as
-- only the newest one counts.
CREATE TABLE IF NOT EXISTS {db}.heartbeats
(
    ts          DateTime64(3, 'UTC'),
    component   LowCardinality(String),
    instance    String,
    status      LowCardinality(String),
    lag_events  Int64,
    details     String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (component, instance, ts)
TTL toDateTime(ts) + INTERVAL 7 DAY
