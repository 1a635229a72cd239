-- What a successful task earns, per tenant and workflow, from a date on. Finance loads it
-- (`agentledger revenue set`); margins join the rate valid on each run's day (ASOF).
-- The newest update of a (tenant, workflow, valid_from) wins.
CREATE TABLE IF NOT EXISTS {db}.revenue
(
    tenant                      LowCardinality(String),
    workflow                    LowCardinality(String),
    valid_from                  Date,
    revenue_per_success_micros  Int64,
    note                        String,
    updated_at                  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, workflow, valid_from)
