"""Kafka topic names and their keys. One place, so producers and consumers agree."""

from typing import Final

EVENTS: Final = "agent.events"
"""Every event, keyed by run_id so a run stays ordered within one partition."""
DLQ: Final = "agent.events.dlq"
"""Rejected input with the reason in headers, keyed by the original key."""
CONTROL: Final = "agent.control"
"""Compacted safe-mode, breaker and budget state per scope."""
METRICS: Final = "agent.metrics"
"""Windowed aggregates per tenant/agent/workflow."""
CHECKPOINTS: Final = "agentledger.checkpoints"
"""Compacted signed tree heads of the ledger's Merkle logs, keyed by log_id (the latest
head per log; the ``checkpoints`` table keeps them all)."""

# Header names carried on DLQ records; the sink writes them, operators grep for them.
H_REASON: Final = "x-reject-reason"
H_ERROR: Final = "x-reject-error"
H_TOPIC: Final = "x-original-topic"
H_PARTITION: Final = "x-original-partition"
H_OFFSET: Final = "x-original-offset"
H_SIZE: Final = "x-original-size"
H_SHA256: Final = "x-original-sha256"
H_TRUNCATED: Final = "x-truncated"
"""Present when the DLQ record holds a prefix of the original: ``value`` or ``key``."""
H_TRACEPARENT: Final = "traceparent"
H_EVENT_TYPE: Final = "event-type"
H_SCHEMA_VERSION: Final = "schema-version"
