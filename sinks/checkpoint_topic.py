"""Signed heads to the compacted ``agentledger.checkpoints`` topic, for witnesses that
follow it (``agentledger checkpoints export --follow``)."""

from __future__ import annotations

from typing import Any

import orjson

from agentledger.core import checkpoint


class TopicPublisher:
    """Heads to the compacted ``agentledger.checkpoints`` topic, keyed by log id (the
    latest per log survives compaction; the table keeps every head)."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 10.0):
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def __call__(self, heads: list[checkpoint.SignedHead]) -> None:
        for head in heads:
            self.producer.produce(self.topic, key=head.log_id.encode(),
                                  value=orjson.dumps(head.to_dict()))
        if self.producer.flush(self.timeout_s) > 0:
            raise TimeoutError(f"{len(heads)} heads not acknowledged in {self.timeout_s}s")
