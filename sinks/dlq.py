"""Dead letters: rejected input goes to ``agent.events.dlq`` and ``rejected_events``.

Nothing is dropped: a rejected message is produced to the DLQ (same key, original bytes,
the reason in headers) and recorded in ClickHouse, and only then is its offset eligible
for commit. The DLQ producer is idempotent with ``acks=all``; :meth:`DeadLetters.flush`
raises if Kafka did not acknowledge every dead letter, which stops the commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas import topics
from sinks.decode import Rejection

PAYLOAD_KEEP_BYTES = 64 * 1024


class DeadLetterFailed(RuntimeError):
    pass


class DeadLetters:
    def __init__(self, producer_config: Mapping[str, Any], topic: str = topics.DLQ):
        self.topic = topic
        self._producer = Producer(dict(producer_config))
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err.str())

    def reject(self, msg: Message, rejection: Rejection) -> list[Any]:
        """Queue ``msg`` for the DLQ; returns its ``rejected_events`` row."""
        value = msg.value() or b""
        headers = [
            (topics.H_REASON, rejection.reason),
            (topics.H_ERROR, rejection.error[:4096]),
            (topics.H_TOPIC, msg.topic() or ""),
            (topics.H_PARTITION, str(msg.partition())),
            (topics.H_OFFSET, str(msg.offset())),
        ]
        self._producer.produce(self.topic, value, msg.key(), headers=headers,
                               on_delivery=self._on_delivery)
        self._producer.poll(0)
        key = msg.key() or b""
        return [
            datetime.now(UTC),
            msg.topic() or "",
            msg.partition(),
            msg.offset(),
            key.decode("utf-8", "replace"),
            rejection.reason,
            rejection.error,
            len(value),
            value[:PAYLOAD_KEEP_BYTES].decode("utf-8", "replace"),
        ]

    def flush(self, timeout_s: float = 30) -> None:
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeadLetterFailed(
                f"DLQ not acknowledged: {remaining} pending, errors: {errors[:3]}")
