-- How the sink's Merkle logs get their leaves from the engine (docs/integrity.md, "Signed
-- checkpoints"; sinks/ledger_engine.py).

-- Where a log's stretch of offsets or leaves is found without scanning it: the sink reads
-- a batch's leaves back from events by (kafka_partition, kafka_offset) range when it
-- cannot use the views below; verify, reconcile and the witness export read ranges too.
-- Offsets and leaf indexes grow with landing time, so a granule's min/max prunes nearly
-- every older granule. Parts written before this migration gain the index when they merge.
ALTER TABLE {db}.events ADD INDEX IF NOT EXISTS idx_kafka_offset kafka_offset
    TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.ledger_leaves ADD INDEX IF NOT EXISTS idx_leaf_index leaf_index
    TYPE minmax GRANULARITY 1;

-- A leaf's hash is a function of its row (core/merkle.py, leaf_input); nothing read the
-- stored copy, and writing it was a tenth of the sink's checkpointing cost.
ALTER TABLE {db}.ledger_leaves DROP COLUMN IF EXISTS leaf_hash;

-- A batch's leaves per partition, computed by the engine from the rows as the sink inserts
-- them, so the sink folds them into its tree without reading events back: the roots of
-- the span's whole aligned blocks of 8 leaves (hex, in order), and the leaves of its
-- partial blocks at either end (hex, in order). Transient, so in memory: the sink reads
-- its batch's rows once, right after the insert (sinks/ledger_engine.py, landed_roots),
-- and only the newest rows are kept (about 8 bytes a leaf). A batch whose rows are gone
-- (a restart, more partitions in one batch than rows kept) is read back from events.
CREATE TABLE IF NOT EXISTS {db}.ledger_landing
(
    batch           String,
    kafka_partition UInt16,
    first_offset    UInt64,
    last_offset     UInt64,
    leaves          UInt64,
    block_roots     String,
    edge_leaves     String,
    landed_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = Memory
SETTINGS max_rows_to_keep = 256;

-- (Each view's columns are its table's, in order, since migrating backfills a view
-- with INSERT … SELECT: a backfill finds no named batch and adds nothing.)
-- Both views fire only for an insert that names a ledger batch in its log_comment setting
-- (the sink's, with checkpoints on and every span of kept offsets contiguous); any other
-- insert into events (another writer, a test, an attacker) adds nothing here. A leaf is
-- core.merkle.LEAF_SQL with its prefix spelled out; leaf i of a span is its
-- base + (offset - first offset), an interior node SHA256(0x01 || left || right).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ledger_landing_mv TO {db}.ledger_landing AS
SELECT JSONExtractString(getSetting('log_comment'), 'ledger_batch') AS batch,
       kafka_partition, min(low) AS first_offset, max(high) AS last_offset,
       sum(n) AS leaves,
       arrayStringConcat(arrayMap(x -> x.2, arraySort(groupArrayIf((block, root), n = 8))))
           AS block_roots,
       arrayStringConcat(arrayMap(x -> x.2, arraySort(groupArrayIf(
           (block, arrayStringConcat(arrayMap(h -> hex(h), hs))), n < 8)))) AS edge_leaves,
       now64(3) AS landed_at
FROM (
    SELECT kafka_partition, intDiv(leaf_index, 8) AS block, count() AS n,
           min(kafka_offset) AS low, max(kafka_offset) AS high,
           arraySort((h, i) -> i, groupArray(leaf), groupArray(leaf_index)) AS hs,
           if(n = 8, hex(SHA256(concat(char(1), SHA256(concat(char(1), SHA256(concat(char(1), hs[1], hs[2])), SHA256(concat(char(1), hs[3], hs[4])))), SHA256(concat(char(1), SHA256(concat(char(1), hs[5], hs[6])), SHA256(concat(char(1), hs[7], hs[8]))))))), '') AS root
    FROM (
        SELECT kafka_partition, kafka_offset,
               JSONExtract(getSetting('log_comment'), 'bases', 'Array(UInt64)')[indexOf(
                   JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
                   kafka_partition)] + kafka_offset
               - JSONExtract(getSetting('log_comment'), 'firsts', 'Array(UInt64)')[indexOf(
                   JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
                   kafka_partition)] AS leaf_index,
               SHA256(concat(char(0), 'agentledger.leaf.v1', char(10), tenant, char(10),
                   run_id, char(10), toString(event_id), char(10), hash)) AS leaf
        FROM {db}.events
        WHERE JSONExtractString(getSetting('log_comment'), 'ledger_batch') != ''
          AND has(JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
                  kafka_partition)
    )
    GROUP BY kafka_partition, block
)
GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ledger_leaves_mv TO {db}.ledger_leaves AS
SELECT JSONExtract(getSetting('log_comment'), 'logs', 'Array(String)')[indexOf(
           JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
           kafka_partition)] AS log_id,
       JSONExtract(getSetting('log_comment'), 'bases', 'Array(UInt64)')[indexOf(
           JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
           kafka_partition)] + kafka_offset
       - JSONExtract(getSetting('log_comment'), 'firsts', 'Array(UInt64)')[indexOf(
           JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
           kafka_partition)] AS leaf_index,
       toString(event_id) AS event_id, tenant, run_id, hash AS event_hash, kafka_offset,
       now64(3) AS landed_at
FROM {db}.events
WHERE JSONExtractString(getSetting('log_comment'), 'ledger_batch') != ''
  AND has(JSONExtract(getSetting('log_comment'), 'partitions', 'Array(UInt16)'),
          kafka_partition)
