"""Dead letters: rejected input goes to ``agent.events.dlq`` and ``rejected_events``.

Shared by the sink and the OTel intakes (each refuses what it cannot take, the same way).

Nothing is dropped: a rejected message is produced to the DLQ (same key, original bytes,
the reason in headers) and recorded in ClickHouse, and only then is its offset eligible
for commit. The DLQ producer is idempotent with ``acks=all``; :meth:`DeadLetters.flush`
raises if Kafka did not acknowledge every dead letter, which stops the commit.

Any message the broker accepted must fit the DLQ, whatever its size: a payload over
``max_payload_bytes`` (or a key over ``MAX_KEY_BYTES``) goes there truncated, with headers
naming its original size and sha256, so the record is still evidence of what arrived.

Redelivery: after a crash the same message is rejected again. Its ``rejected_events`` row
is identical (``received_at`` is the broker's timestamp, not the wall clock), so the
ReplacingMergeTree key ``(topic, partition, offset)`` shows it once to ``FINAL`` queries;
the DLQ topic itself is at-least-once, and its consumers dedup by the original-offset
headers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agentledger.schemas import topics

PAYLOAD_KEEP_BYTES = 64 * 1024
"""What ``rejected_events.payload`` keeps of a rejected message (the DLQ keeps more)."""
DLQ_PAYLOAD_BYTES = 512 * 1024
"""Default cap on a DLQ record's value: well under the 1 MB ``message.max.bytes`` default."""
MAX_KEY_BYTES = 1024
# A broker timestamp outside this window is not trusted as the row's time (TTL and
# partitioning use it); the wall clock is used instead.
_TRUSTED_PAST = timedelta(days=30)
_TRUSTED_FUTURE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: a reason code and the error text, both kept as evidence."""

    reason: str
    """one of: empty, oversized, invalid_json, unknown_event_type,
    unsupported_schema_version, schema, unstorable, or an intake's own (docs/otel.md)"""
    error: str


class DeadLetterFailed(RuntimeError):
    pass


def received_at(msg: Message, now: datetime | None = None) -> datetime:
    """When the broker took the message: stable across redeliveries, unlike ``now()``."""
    now = now or datetime.now(UTC)
    _kind, millis = msg.timestamp()
    if millis and millis > 0:
        stamp = datetime.fromtimestamp(millis / 1000, UTC)
        if now - _TRUSTED_PAST <= stamp <= now + _TRUSTED_FUTURE:
            return stamp
    return now


class DeadLetters:
    def __init__(self, producer_config: Mapping[str, Any], topic: str = topics.DLQ, *,
                 max_payload_bytes: int = DLQ_PAYLOAD_BYTES):
        self.topic = topic
        self.max_payload_bytes = max_payload_bytes
        self._producer = Producer(dict(producer_config))
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(err.str())

    def reject(self, msg: Message, rejection: Rejection) -> list[Any]:
        """Queue ``msg`` for the DLQ; returns its ``rejected_events`` row."""
        value = msg.value() or b""
        key = msg.key() or b""
        digest = hashlib.sha256(value).hexdigest()
        headers: list[tuple[str, str | bytes | None]] = [
            (topics.H_REASON, rejection.reason),
            (topics.H_ERROR, rejection.error[:4096]),
            (topics.H_TOPIC, msg.topic() or ""),
            (topics.H_PARTITION, str(msg.partition())),
            (topics.H_OFFSET, str(msg.offset())),
            (topics.H_SIZE, str(len(value))),
            (topics.H_SHA256, digest),
        ]
        kept_value = value
        if len(value) > self.max_payload_bytes:
            kept_value = value[: self.max_payload_bytes]
            headers.append((topics.H_TRUNCATED, "value"))
        kept_key = key
        if len(key) > MAX_KEY_BYTES:
            kept_key = key[:MAX_KEY_BYTES]
            headers.append((topics.H_TRUNCATED, "key"))
        self._produce(kept_value, kept_key, headers)
        return [
            received_at(msg),
            msg.topic() or "",
            msg.partition(),
            msg.offset(),
            kept_key.decode("utf-8", "replace"),
            rejection.reason,
            rejection.error,
            len(value),
            digest,
            value[:PAYLOAD_KEEP_BYTES].decode("utf-8", "replace"),
        ]

    def _produce(self, value: bytes, key: bytes,
                 headers: list[tuple[str, str | bytes | None]]) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self._producer.produce(self.topic, value, key or None, headers=headers,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                if time.monotonic() > deadline:
                    raise DeadLetterFailed("DLQ producer queue full for 30s") from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                # Refused locally (e.g. still too large for this producer's limits): the
                # evidence that remains is the headers, so send those with no value.
                if not value:
                    raise DeadLetterFailed(f"DLQ refused even an empty record: {exc}") from exc
                headers = [*headers, (topics.H_TRUNCATED, "value-dropped")]
                value = b""
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30) -> None:
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeadLetterFailed(
                f"DLQ not acknowledged: {remaining} pending, errors: {errors[:3]}")
