"""Where both OTLP intakes put their output: events on ``agent.events``, bad spans in the DLQ.

Events go out exactly as the SDK sends them (JSON, keyed by ``run_id``, the same headers),
so the sink, the control loop and every query treat an OTel-fed run like any other.
A refused span goes through the sink's own dead-letter writer (:class:`agentledger.sinks.dlq.
DeadLetters`): same topic, same headers (reason, error, origin), the span as OTLP/JSON for
evidence; the returned ``rejected_events`` row is written by whoever holds the store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from agentledger.core.kafka import client_config
from agentledger.intake.runs import Rejected
from agentledger.schemas import topics
from agentledger.sinks.decode import Rejection
from agentledger.sinks.dlq import DeadLetters


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge every event; nothing may be committed or acknowledged."""


class SpanMessage:
    """A refused span shaped like a Kafka message, so DeadLetters records it unchanged."""

    def __init__(self, rejected: Rejected, topic: str, partition: int, offset: int | None):
        self._value = orjson.dumps({"reason": rejected.reason, "error": rejected.message,
                                    "span": rejected.span.to_json()}, default=str)
        self._key = rejected.span.trace_id.encode()
        self._topic = topic
        self._partition = partition
        # Without a Kafka offset, a stable one from the content: a resent span keeps its
        # rejected_events key (topic, partition, offset), so FINAL shows it once.
        self._offset = offset if offset is not None else int.from_bytes(
            hashlib.sha256(self._value).digest()[:7], "big")

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class Publisher:
    def __init__(self, bootstrap: str, *, security: Mapping[str, str] | None = None,
                 topic: str = topics.EVENTS):
        self.topic = topic
        extra = dict(security or {})
        self._producer = Producer(client_config(bootstrap, "producer", extra=extra))
        self.dead_letters = DeadLetters(client_config(bootstrap, "producer", extra=extra))
        self._errors: list[str] = []
        self.published = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err.str())

    def publish(self, events: Iterable[dict[str, Any]]) -> int:
        """Queue ``events`` for Kafka; :meth:`flush`, which both intakes call after every
        round, waits for them and serves the delivery reports (so no poll per run)."""
        count = 0
        for event in events:
            headers = [(topics.H_TRACEPARENT, f"00-{event['trace_id']}-{event['span_id']}-01"),
                       (topics.H_EVENT_TYPE, event["event_type"]),
                       (topics.H_SCHEMA_VERSION, "1")]
            payload, key = orjson.dumps(event), event["run_id"].encode()
            deadline = time.monotonic() + 30
            while True:
                try:
                    self._producer.produce(self.topic, payload, key, headers=headers,
                                           on_delivery=self._on_delivery)
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        raise PublishFailed("producer queue full for 30s: is Kafka up?") \
                            from None
                    self._producer.poll(0.05)
            count += 1
        self.published += count
        return count

    def reject(self, rejected: Iterable[Rejected], *, topic: str, partition: int = 0,
               offset: int | None = None) -> list[list[Any]]:
        """Dead-letter each refused span; returns their ``rejected_events`` rows."""
        # A SpanMessage has what DeadLetters reads of a Kafka message (see its docstring).
        return [self.dead_letters.reject(cast(Message, SpanMessage(r, topic, partition, offset)),
                                         Rejection(r.reason, r.message)) for r in rejected]

    def flush(self, timeout_s: float = 30) -> None:
        """Wait for Kafka to acknowledge everything queued; raise if it did not."""
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise PublishFailed(f"events not acknowledged: {remaining} pending, "
                                f"errors: {errors[:3]}")
        self.dead_letters.flush(timeout_s)
