"""Where both OTLP intakes put their output: events on ``agent.events``, bad spans in the DLQ.

Events go out exactly as the SDK sends them (JSON, keyed by ``run_id``, the same headers),
so the sink, the control loop and every query treat an OTel-fed run like any other.
A refused span goes through the dead-letter writer the sink uses too
(:class:`~agentledger.core.dead_letters.DeadLetters`): same topic, same headers (reason,
error, origin), the span as OTLP/JSON for evidence; the sink lands it in
``rejected_events``.

The closers' liveness (:class:`CloserBeat`) is published here too: each closer writes a
small file in the run dir every second from its own loop, and the store process's
pipeline reporter lands it in ``heartbeats`` (:func:`closer_rows`), where ``health``
judges it: a closer that stopped beating, or runs that failed, are reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from agentledger.core import discovery
from agentledger.core.dead_letters import DeadLetters, Rejection
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.intake.runs import Assembler, Rejected
from agentledger.schemas import topics


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge every event; nothing may be committed or acknowledged."""


class SpanMessage:
    """A refused span shaped like a Kafka message, so DeadLetters records it unchanged."""

    def __init__(self, rejected: Rejected, topic: str, partition: int, offset: int | None,
                 source: dict[str, Any] | None = None):
        document: dict[str, Any] = {"reason": rejected.reason, "error": rejected.message,
                                    **({"source": source} if source else {})}
        try:
            self._value = orjson.dumps({**document, "span": rejected.span.to_json()},
                                       default=str)
        except (TypeError, ValueError):  # evidence that will not encode: say so, keep ids
            self._value = orjson.dumps({**document, "span": {
                "traceId": rejected.span.trace_id, "spanId": rejected.span.span_id,
                "name": rejected.span.name, "unencodable": True}}, default=str)
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
               offset: int | None = None, source: dict[str, Any] | None = None
               ) -> list[list[Any]]:
        """Dead-letter each refused span; returns their ``rejected_events`` rows.

        ``source`` (where the span was read, kept in the evidence) lets a caller leave
        ``offset`` None when several spans share one message: each then gets a content
        offset, so every span is its own ``rejected_events`` row, stable on redelivery."""
        # A SpanMessage has what DeadLetters reads of a Kafka message (see its docstring).
        return [self.dead_letters.reject(
            cast(Message, SpanMessage(r, topic, partition, offset, source)),
            Rejection(r.reason, r.message)) for r in rejected]

    def flush(self, timeout_s: float = 30) -> None:
        """Wait for Kafka to acknowledge everything queued; raise if it did not."""
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise PublishFailed(f"events not acknowledged: {remaining} pending, "
                                f"errors: {errors[:3]}")
        self.dead_letters.flush(timeout_s)


CLOSER_PREFIX = "otlp-closer-"
BEAT_EVERY_S = 1.0
FAILING_FOR_S = 600.0
"""How long after a failed run ``health`` keeps reporting the closer as failing."""


class CloserBeat:
    """The run closer's liveness, written to ``<run_dir>/otlp-closer-<role>-<pid>.json``.

    Written by the closer's own loop (never by a helper thread), so a file that stops
    changing is a closer that stopped closing; :func:`closer_rows` turns the files into
    ``heartbeats`` rows whose time is the last beat, and ``health`` reports a silent one.
    """

    def __init__(self, settings: Settings, role: str, assembler: Assembler):
        self.settings = settings
        self.name = f"{CLOSER_PREFIX}{role}-{os.getpid()}.json"
        self.role = role
        self.assembler = assembler
        self.spans_refused = 0
        """Spans refused when their run was closed (``run_unbuildable``)."""
        self.errors = 0
        """Closing rounds that raised (logged; the loop went on)."""
        self.last_error: str | None = None
        self.last_closed: str | None = None
        self._failed_seen = 0
        self._errors_seen = 0
        self.last_failure_at: str | None = None
        """When a run last failed to build or a round last raised: ``health`` reports the
        closer as failing for a while after, not forever."""
        self._next = 0.0
        self._lock = threading.Lock()

    def closed(self, runs: int) -> None:
        if runs:
            self.last_closed = datetime.now(UTC).isoformat()

    def beat(self, *, force: bool = False) -> None:
        """Publish the closer's state, at most once a second unless ``force``."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + BEAT_EVERY_S
        a = self.assembler
        stamp = datetime.now(UTC).isoformat()
        if a.failed_runs > self._failed_seen or self.errors > self._errors_seen:
            self._failed_seen, self._errors_seen = a.failed_runs, self.errors
            self.last_failure_at = stamp
        # a full or read-only disk must not stop the closer
        with self._lock, contextlib.suppress(OSError):
            discovery.publish(self.settings, self.name, {
                "role": self.role, "beat": stamp, "last_failure_at": self.last_failure_at,
                "last_closed": self.last_closed, "open_traces": a.open_traces,
                "open_spans": a.open_spans, "runs_closed": a.closed_runs,
                "runs_failed": a.failed_runs, "last_failure": a.last_failure,
                "spans_refused_at_close": self.spans_refused, "errors": self.errors,
                "last_error": self.last_error})

    def withdraw(self) -> None:
        discovery.withdraw(self.settings, self.name)


def closer_rows(settings: Settings, now: datetime) -> list[tuple[datetime, str, str, str,
                                                                   int, dict[str, Any]]]:
    """(ts, component, instance, status, lag, details) of every live process's closer.

    ``ts`` is the closer's last beat, so a closer that stopped beating ages in
    ``heartbeats`` and ``health`` says so; a process that died is dropped by discovery
    (its pid is gone) and its last row ages the same way."""
    found = []
    for path in sorted(settings.run_dir.glob(f"{CLOSER_PREFIX}*.json")):
        info = discovery.lookup(settings, path.name)
        if not info:
            continue
        try:
            beat = datetime.fromisoformat(info["beat"])
        except (KeyError, TypeError, ValueError):
            beat = now
        status = "ok"
        with contextlib.suppress(TypeError, ValueError):
            failed_at = datetime.fromisoformat(info.get("last_failure_at") or "")
            status = "failing" if (now - failed_at).total_seconds() < FAILING_FOR_S else "ok"
        instance = f"{info.get('role', '?')}/{info.get('pid', '?')}"
        found.append((beat, "otlp-closer", instance, status, int(info.get("open_spans", 0)),
                      {k: v for k, v in info.items() if k != "pid"}))
    return found
