"""A Ledger that keeps events in memory instead of producing them to Kafka.

Everything else is the real SDK (ids, spans, redaction, validation, the hash chain), so
what it records is byte for byte what an agent would send. For unit tests of agent code,
and for generating large realistic datasets straight into ClickHouse (``bench/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from agentledger.producers.emitter import Ledger


class MemoryLedger(Ledger):
    """Collects each event's JSON in :attr:`events` (bytes, as it would cross Kafka)."""

    def __init__(self, identity: Any, **kwargs: Any):
        self.events: list[bytes] = []
        super().__init__({}, identity, **kwargs)

    def _make_producer(self, config: Mapping[str, Any]) -> Any:
        return None

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        self.events.append(orjson.dumps(event))
        self.sent += 1
        self.delivered += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        return self.delivered

    def take(self) -> list[bytes]:
        """The events recorded since the last call."""
        taken, self.events = self.events, []
        return taken
