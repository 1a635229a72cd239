"""The sink loop: Kafka → decode → batch → write (on a thread) → commit.

Each step is a module with its guarantee beside it: :mod:`agentledger.core.offsets` (no
offset is skipped), :mod:`agentledger.sinks.routes` (decode: every message becomes a row or
a rejection), :mod:`agentledger.sinks.clickhouse` (batch and insert),
:mod:`agentledger.sinks.writer` (ordered writes on a thread, retries),
:mod:`agentledger.core.dead_letters` (dead letters) and, here, the commit rule. The Kafka
consumer is injected (anything with ``subscribe/consume/seek/commit/assignment/position/
get_watermark_offsets/close``), so the loop runs against an in-memory stand-in in unit
tests and the real broker elsewhere.

It lands the control loop's output the same way: ``agent.control`` into
``control_signals`` (tombstones are not landed; stream-worker heartbeats go to
``heartbeats``) and ``agent.metrics`` into ``metrics``. From ``agent.events.dlq`` it lands
what the OTel intakes refused (they hold no store) into ``rejected_events``.

Delivery guarantee: at-least-once. A batch's offsets are committed only after
ClickHouse acknowledged its rows *and* Kafka acknowledged its dead letters, in
submission order; a crash before that (``kill -9`` included) means the batch is consumed
again. Redelivered events carry the same ``event_id``/``ts``/``tenant`` and so the same
ReplacingMergeTree key, so a query shows each event once: aggregate queries read through
``FINAL``, and event pages dedup by ``LIMIT 1 BY event_id``
(``agentledger/queries/events.py``). On SIGTERM, or a partition revocation, the loop
flushes and commits first.

Input never stops the sink: every message the broker accepted becomes a row or a dead
letter, whatever its size or bytes. A failing insert is retried with backoff; if it keeps
failing the loop stops uncommitted (the supervisor restarts it and ``health`` says so).

Every ``status_interval_s`` the sink adds a ``heartbeats`` row about itself (and any rows
``status_rows`` supplies) to the batch being built, so liveness is landed like data.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentledger.core.dead_letters import Rejection
from agentledger.core.offsets import GapGuard
from agentledger.schemas import topics
from agentledger.sinks.clickhouse import Batch, BatchPolicy
from agentledger.sinks.dlq import refusal_row
from agentledger.sinks.routes import DecodeStep
from agentledger.sinks.rows import heartbeat_row
from agentledger.sinks.writer import DeadLetterQueue, Writer, WriteStep

log = logging.getLogger(__name__)


class KafkaConsumer(Protocol):
    """What the loop needs of a consumer (confluent-kafka's ``Consumer`` has it)."""

    def subscribe(self, topics: list[str], *, on_revoke: Any = ...) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
               ) -> Any: ...
    def assignment(self) -> list[TopicPartition]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = ...,
                              cached: bool = ...) -> tuple[int, int]: ...
    def close(self) -> None: ...


class DeadLetterSink(DeadLetterQueue, Protocol):
    def reject(self, msg: Any, rejection: Rejection) -> list[Any]: ...


@dataclass
class SinkStats:
    consumed: int = 0
    inserted: int = 0
    rejected: int = 0
    batches: int = 0
    committed_batches: int = 0
    write_retries: int = 0
    uncommitted: int = 0
    """messages consumed but not yet committed (in the batch or being written)"""
    last_commit_at: float = 0.0
    """wall-clock time of the last commit, 0 before the first"""
    lag_events: int = -1
    """messages behind the end of the assigned partitions, at the last status report"""
    gaps_refetched: int = 0
    """times a partition skipped offsets and was read again from the missing one"""
    gaps_accepted: int = 0
    """offsets never delivered after waiting for them (``core/offsets.py``)"""
    refusals_landed: int = 0
    """dead letters of the OTel intakes landed in ``rejected_events``"""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Sink:
    def __init__(
        self,
        consumer: KafkaConsumer,
        writer: Writer,
        dead_letters: DeadLetterSink,
        *,
        policy: BatchPolicy | None = None,
        max_event_bytes: int = 256 * 1024,
        topics_: tuple[str, ...] = (topics.EVENTS, topics.CONTROL, topics.METRICS,
                                    topics.DLQ),
        on_batch: Callable[[SinkStats], None] | None = None,
        status_interval_s: float = 5.0,
        stall_after_s: float = 30.0,
        status_rows: Callable[[SinkStats], list[list[Any]]] | None = None,
    ):
        self.topics = list(topics_)
        self.landed_topics = tuple(t for t in topics_ if t != topics.DLQ)
        """Input topics whose refusals this sink lands itself as it dead-letters them."""
        self.policy = policy or BatchPolicy()
        self.decode = DecodeStep(max_event_bytes)
        self.gaps = GapGuard(consumer.seek, (topics.EVENTS, topics.METRICS))
        self.writes = WriteStep(writer, dead_letters)
        self.dead_letters = dead_letters
        self.stats = SinkStats()
        self.on_batch = on_batch
        self.status_interval_s = status_interval_s
        self.stall_after_s = stall_after_s
        self.status_rows = status_rows
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.committed: dict[tuple[str, int], int] = {}
        """(topic, partition) → the next offset, as last committed by this sink"""
        self.high_watermarks: dict[tuple[str, int], int] = {}
        """(topic, partition) → the broker's high watermark at the last status report"""
        self._consumer = consumer
        self._stop = threading.Event()
        self._batch = Batch()
        self._next_status = 0.0
        self._progress_at = time.monotonic()

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to flush, commit and return (safe from a signal handler)."""
        self._stop.set()

    def run(self, max_idle_s: float | None = None) -> SinkStats:
        """Consume until :meth:`stop` (or ``max_idle_s`` without messages, for tests)."""
        self.writes.start()
        self._consumer.subscribe(self.topics, on_revoke=self._on_revoke)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(num_messages=5000, timeout=0.2)
                self.gaps.next_poll()
                if messages:
                    idle_since = time.monotonic()
                for msg in messages:
                    self._add(msg)
                self._commit_written()
                self._report_status()
                if self._batch.full(self.policy):
                    self._flush_batch()
                elif not self._batch.offsets and not self._batch.heartbeats:
                    self._batch.opened = time.monotonic()
                if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            self._flush_batch()
            self._commit_written(block=True)
        finally:
            self.writes.stop()
            self._consumer.close()
            self._sync_counters()
        return self.stats

    # -- per message -----------------------------------------------------------------

    def _add(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": err.str()})
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if not self.gaps.admit(topic, partition, offset):
            return  # fetched again from the offset this consumer skipped
        value = msg.value()
        self.stats.uncommitted += 1
        batch = self._batch
        batch.track(topic, partition, offset, len(value or b""))
        if topic == topics.DLQ:  # not input: what an intake refused, for the store
            row = refusal_row(msg, self.landed_topics)
            if row is not None:
                batch.rejected.append(row)
                self.stats.refusals_landed += 1
            return
        self.stats.consumed += 1
        routed = self.decode(topic, value, partition, offset)
        if isinstance(routed, Rejection):
            batch.rejected.append(self.dead_letters.reject(msg, routed))
            self.stats.rejected += 1
            log.info("event rejected", extra={"reason": routed.reason,
                                              "error": routed.error[:200],
                                              "partition": partition, "offset": offset})
        elif routed is not None:
            table, row = routed
            getattr(batch, table).append(row)

    # -- liveness --------------------------------------------------------------------

    def _report_status(self) -> None:
        now = time.monotonic()
        if now < self._next_status:
            return
        self._next_status = now + self.status_interval_s
        self.stats.lag_events = self._lag()
        self._sync_counters()
        waiting = self.stats.uncommitted > 0 or self.stats.lag_events > 0
        stalled = waiting and now - self._progress_at > self.stall_after_s
        details = {**self.stats.as_dict(), "seconds_since_progress": round(
            now - self._progress_at, 1), "stall_after_s": self.stall_after_s}
        self._batch.heartbeats.append(heartbeat_row(
            datetime.now(UTC), "sink", self.instance, "stalled" if stalled else "ok",
            self.stats.lag_events, details))
        if self.status_rows is not None:
            try:
                self._batch.heartbeats.extend(self.status_rows(self.stats))
            except Exception as exc:  # liveness reporting must never stop the sink
                log.warning("status rows failed", extra={"error": str(exc)})

    def _sync_counters(self) -> None:
        self.stats.write_retries = self.writes.retries
        self.stats.gaps_refetched = self.gaps.gaps_refetched
        self.stats.gaps_accepted = self.gaps.gaps_accepted

    def _lag(self) -> int:
        """Messages between this sink's position and the end of its partitions.

        The ends are the ones the last fetch responses carried (``cached``): asking the
        broker instead blocked this loop, and so every event behind it, for about 0.5 s
        every status interval once the embedded broker held 1M events (py-spy, --idle).
        A partition not fetched yet has no cached end and is asked for."""
        try:
            assigned = self._consumer.assignment()
            if not assigned:
                return 0
            behind = 0
            for tp in self._consumer.position(assigned):
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    _low, high = self._consumer.get_watermark_offsets(tp, timeout=1)
                self.high_watermarks[(tp.topic, tp.partition)] = high
                if tp.offset >= 0 and high >= 0:
                    behind += max(0, high - tp.offset)
            return behind
        except KafkaException:
            return -1

    # -- writing and committing ------------------------------------------------------

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, Batch()
        if batch.offsets or batch.heartbeats:
            self.writes.submit(batch, while_waiting=self._commit_written)

    def _commit_written(self, block: bool = False) -> None:
        for batch in self.writes.done(block=block):
            self._commit(batch)

    def _commit(self, batch: Batch) -> None:
        """The commit rule: only a written batch's offsets, in submission order."""
        self._progress_at = time.monotonic()
        if not batch.offsets:  # status rows only: nothing consumed, nothing to commit
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        self.stats.batches += 1
        self.stats.inserted += batch.inserted_events
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.committed.update(batch.offsets)
            self.stats.committed_batches += 1
            self.stats.last_commit_at = time.time()
        except KafkaException as exc:
            # The rows are in ClickHouse; the worst case is a redelivery, which dedups.
            log.warning("offset commit failed", extra={"error": str(exc)})
        self.stats.uncommitted = max(0, self.stats.uncommitted - batch.messages)
        if self.on_batch:
            self.on_batch(self.stats)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Everything read so far is written and committed before the partitions move, so
        # the new owner starts where this one stopped.
        self._flush_batch()
        self._commit_written(block=True)
        self.gaps.forget(partitions)
