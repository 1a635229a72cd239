-- Where the ledger finds a log's stretch of offsets or leaves without scanning it
-- (docs/integrity.md, "Signed checkpoints"). The sink reads each batch's leaves back from
-- events by (kafka_partition, kafka_offset) range to hash them in the engine; verify,
-- reconcile and the witness export read ranges too. Offsets and leaf indexes grow with
-- landing time, and parts are written in landing order, so a granule's min/max prunes
-- nearly every older granule. Parts written before this migration gain the index when
-- they merge.
ALTER TABLE {db}.events ADD INDEX IF NOT EXISTS idx_kafka_offset kafka_offset
    TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.ledger_leaves ADD INDEX IF NOT EXISTS idx_leaf_index leaf_index
    TYPE minmax GRANULARITY 1;

-- A leaf's hash is a function of its row (core/merkle.py, leaf_input); nothing read the
-- stored copy, and writing it was a tenth of the sink's checkpointing cost.
ALTER TABLE {db}.ledger_leaves DROP COLUMN IF EXISTS leaf_hash
