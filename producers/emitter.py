"""The ``Ledger`` emitter: validated, hash-chained events onto ``agent.events``.

Delivery semantics: the producer is idempotent with ``acks=all``, so a broker retry never
duplicates or reorders an event within a partition; events are keyed by ``run_id``, so a
run stays ordered. Delivery is asynchronous: a failed delivery is recorded by the
delivery callback and raised by :meth:`Ledger.flush` as :class:`DeliveryFailed` — never
dropped silently. The local buffer is bounded; when it is full for longer than
``buffer_timeout_s`` (broker down or too slow), :meth:`emit` raises :class:`BufferFull`
instead of growing without limit.

With ``spool_dir`` set, events are first written to an on-disk spool
(:mod:`agentledger.producers.spool`) and survive a broker outage of any length (up to the spool's
size) and a restart of the agent process: a new ``Ledger`` on the same directory re-sends
what was not acknowledged. Delivery then never times out; :meth:`Ledger.flush` raising
``DeliveryFailed`` means "not yet", the events stay spooled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace
from pydantic import ValidationError

from agentledger.core.kafka import client_config
from agentledger.core.pricing import DEFAULT_PRICES, PriceTable
from agentledger.core.redaction import Redactor
from agentledger.core.settings import DEFAULT_REDACT_KEYS
from agentledger.producers.context import RunContext
from agentledger.producers.identity import AgentIdentity
from agentledger.producers.spool import Spool, SpoolFull
from agentledger.producers.tracing import get_tracer
from agentledger.schemas import topics
from agentledger.schemas.events import BODY_MODELS, Envelope, validation_reason

log = logging.getLogger(__name__)

class DeliveryFailed(RuntimeError):
    """Some events were not acknowledged by Kafka; ``failures`` lists (event_id, error)."""

    def __init__(self, message: str, failures: list[tuple[str, str]]):
        super().__init__(message)
        self.failures = failures


class BufferFull(RuntimeError):
    """The local produce buffer stayed full for ``buffer_timeout_s``."""


class InvalidEvent(ValueError):
    """The SDK was asked to emit an event that fails the schema; nothing was sent."""


def _validated(identity: AgentIdentity) -> AgentIdentity:
    """Check the identity against the envelope's field rules once, not per event."""
    for name in ("tenant", "agent", "agent_version", "principal", "workspace", "env"):
        try:  # on a blank envelope: only the one field is checked
            Envelope.__pydantic_validator__.validate_assignment(
                Envelope.model_construct(), name, getattr(identity, name))  # type: ignore[call-arg]
        except ValidationError as exc:
            raise InvalidEvent(f"identity.{name}: {exc.errors()[0]['msg']}") from None
    return identity


class Ledger:
    def __init__(
        self,
        producer_config: Mapping[str, Any],
        identity: AgentIdentity,
        *,
        topic: str = topics.EVENTS,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        signing_key: bytes | Ed25519PrivateKey | None = None,
        prices: PriceTable = DEFAULT_PRICES,
        buffer_timeout_s: float = 5.0,
        validate: bool = True,
        clock: Callable[[], datetime] | None = None,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        tracer: trace.Tracer | None = None,
    ):
        """``tracer``: where run spans go; default :func:`get_tracer` (which installs an
        SDK provider globally if the host has none: right for an agent, not for a server
        process whose framework would then trace every request for real)."""
        self.identity = _validated(identity)
        self.topic = topic
        self.redactor = Redactor(redact_keys)
        self.signing_key = signing_key
        self.prices = prices
        self.validate = validate
        self.clock = clock or (lambda: datetime.now(UTC))
        self._buffer_timeout_s = buffer_timeout_s
        self.tracer = tracer or get_tracer()
        self.spool = Spool(spool_dir, max_bytes=spool_max_bytes) if spool_dir else None
        config = dict(producer_config)
        if self.spool is not None:
            config["message.timeout.ms"] = 0  # spooled events wait for Kafka, however long
        self._producer = self._make_producer(config)
        self._lock = threading.Lock()
        self._failures: list[tuple[str, str]] = []
        self._waiting: deque[tuple[int, bytes, bytes, list[tuple[str, str]]]] = deque()
        self.delivered = 0
        self.sent = 0
        if self.spool is not None:
            self._waiting.extend(self.spool.replay())
            self._drain_spool()

    def _make_producer(self, config: Mapping[str, Any]) -> Producer:
        return Producer(dict(config))

    @classmethod
    def connect(cls, bootstrap: str, identity: AgentIdentity, **kwargs: Any) -> Ledger:
        """A Ledger with the project's producer settings for ``bootstrap``."""
        extra = kwargs.pop("producer_overrides", None) or {}
        return cls(client_config(bootstrap, "producer", **extra), identity, **kwargs)

    # -- runs ----------------------------------------------------------------------

    def run(self, workflow: str, **kwargs: Any) -> RunContext:
        """Open a run: ``with ledger.run("ticket_triage", inputs=...) as run: ...``."""
        return RunContext(self, workflow=workflow, **kwargs)

    # -- the wire ------------------------------------------------------------------

    def check(self, event_type: str, body: dict[str, Any]) -> None:
        """Raise :class:`InvalidEvent` (naming the field) if a body fails the schema.

        Only the body is checked per event: the envelope is built by the SDK from the
        identity, which was validated once when the Ledger was made, and from ids, times
        and hashes it generates itself.
        """
        if not self.validate:
            return
        model = BODY_MODELS.get(event_type)
        if model is None:
            raise InvalidEvent(f"event_type: unknown event type {event_type!r}")
        try:
            model.model_validate(body)
        except ValidationError as exc:
            reason = validation_reason(exc)[1]
            raise InvalidEvent(f"{event_type} body: {reason}") from None

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        """Queue one finished event (hash and all) for delivery."""
        payload = orjson.dumps(event)
        headers = [
            (topics.H_TRACEPARENT, traceparent),
            (topics.H_EVENT_TYPE, event["event_type"]),
            (topics.H_SCHEMA_VERSION, "1"),
        ]
        key = event["run_id"].encode()
        if self.spool is not None:
            try:
                segment = self.spool.append(key, payload, headers)
            except SpoolFull as exc:
                raise BufferFull(str(exc)) from None
            self._waiting.append((segment, key, payload, headers))
            self.sent += 1
            self._drain_spool()
            return
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    self.topic, payload, key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                now = time.monotonic()
                deadline = deadline or now + self._buffer_timeout_s
                if now >= deadline:
                    raise BufferFull(
                        f"local produce buffer full for {self._buffer_timeout_s}s "
                        f"({len(self._producer)} events waiting): is Kafka reachable?"
                    ) from None
                self._producer.poll(0.05)
        self.sent += 1
        self._producer.poll(0)

    def _drain_spool(self) -> None:
        """Hand spooled events to the producer in order, as far as its buffer allows."""
        while self._waiting:
            segment, key, payload, headers = self._waiting[0]
            try:
                self._producer.produce(self.topic, payload, key, headers=list(headers),
                                       on_delivery=partial(self._on_spooled, segment))
            except BufferError:
                break  # the rest stays on disk and in order; the next emit or flush goes on
            self._waiting.popleft()
        self._producer.poll(0)

    def _on_spooled(self, segment: int, err: KafkaError | None, msg: Message) -> None:
        assert self.spool is not None
        if err is not None and err.retriable():
            # Without a delivery timeout this is rare; send it again rather than lose it.
            log.warning("spooled event not delivered; re-queued", extra={"error": err.str()})
            received = msg.headers() or []
            pairs = received.items() if isinstance(received, dict) else received
            headers = [(k, v.decode() if isinstance(v, bytes) else v or "") for k, v in pairs]
            self._waiting.append((segment, msg.key() or b"", msg.value() or b"", headers))
            return
        self.spool.ack(segment)
        self._on_delivery(err, msg)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        try:
            event_id = orjson.loads(msg.value() or b"{}").get("event_id", "?")
        except orjson.JSONDecodeError:
            event_id = "?"
        with self._lock:
            self._failures.append((str(event_id), err.str()))
        log.error("event delivery failed", extra={"event_id": event_id, "error": err.str()})

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every queued event is acknowledged; return how many were delivered.

        Raises :class:`DeliveryFailed` if any event was refused or is still unacknowledged
        after ``timeout_s`` (with a spool, unacknowledged events stay spooled).
        """
        deadline = time.monotonic() + timeout_s
        if self.spool is not None:
            self.spool.sync()
            while self._waiting and time.monotonic() < deadline:
                self._drain_spool()
                self._producer.poll(0.05)
        remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        remaining += len(self._waiting)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            kept = " (kept in the spool)" if self.spool is not None else ""
            raise DeliveryFailed(
                f"{remaining} events still unacknowledged after {timeout_s}s{kept}", failures
            )
        if failures:
            raise DeliveryFailed(
                f"{len(failures)} events were not delivered: {failures[0][1]}", failures
            )
        if self.spool is not None:
            self.spool.roll()  # everything acknowledged: its segment can go
        return self.delivered

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
