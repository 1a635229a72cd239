-- The ledger's Merkle logs (docs/integrity.md, "Signed checkpoints"): one append-only
-- tree per agent.events partition, log_id 'agent.events/<partition>', leaves in landing
-- (offset) order, one leaf per event_id at its first landed copy. Written by the sink
-- only, in this order per flush: events, ledger_leaves, ledger_state, then (when due)
-- checkpoints; the batch's offsets are committed after all of them.

-- One row per leaf. Ordered by event_id within a log so the sink's duplicate check
-- ("is this event_id a leaf already?") reads only the few granules near a batch's
-- UUIDv7 ids. A leaf re-written after a crash has the same index and content, so the
-- replacing merge keeps one.
CREATE TABLE IF NOT EXISTS {db}.ledger_leaves
(
    log_id          LowCardinality(String),
    leaf_index      UInt64,
    event_id        String,
    tenant          LowCardinality(String),
    run_id          String,
    event_hash      String,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (log_id, event_id);

-- The sink's tree state per log: the compact range (frontier) after tree_size leaves and
-- the next offset it covers. Persisted with every flush before the offset commit; the
-- row with the highest next_offset is the state (leaf rows at or beyond its tree_size are
-- leftovers of a crashed flush and are written again identically).
CREATE TABLE IF NOT EXISTS {db}.ledger_state
(
    log_id          LowCardinality(String),
    next_offset     UInt64,
    tree_size       UInt64,
    frontier        String,
    updated_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY log_id;

-- Signed tree heads: ed25519 by the ledger key (purpose agentledger.checkpoint.v1) over
-- "agentledger.checkpoint.v1\n{log_id}\n{tree_size}\n{root_hash}\n{issued_at_ms}\n"
-- (core/checkpoint.py). root_hash and signature are lowercase hex.
CREATE TABLE IF NOT EXISTS {db}.checkpoints
(
    log_id          LowCardinality(String),
    tree_size       UInt64,
    root_hash       String,
    issued_at       DateTime64(3, 'UTC'),
    key_id          String,
    signature       String
)
ENGINE = ReplacingMergeTree
ORDER BY (log_id, tree_size, issued_at)
