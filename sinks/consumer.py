"""The sink loop: ``agent.events`` → validate → batch → ClickHouse → commit.

It lands the control loop's output the same way: ``agent.control`` into
``control_signals`` (tombstones are not landed; stream-worker heartbeats go to
``heartbeats``) and ``agent.metrics`` into ``metrics``; anything on them that fails its
schema goes to the DLQ like a bad event.

Delivery guarantee: at-least-once. A batch's offsets are committed only after
ClickHouse acknowledged its rows *and* Kafka acknowledged its dead letters; a crash
before that (``kill -9`` included) means the batch is consumed again. Redelivered events
carry the same ``event_id``/``ts``/``tenant`` and so the same ReplacingMergeTree key:
``SELECT … FINAL`` (which every project query uses) shows each event once.

Input never stops the sink: every message the broker accepted becomes a row or a dead
letter, whatever its size or bytes (see :mod:`sinks.dlq`); a row that cannot even be
built is rejected as ``unstorable``. A failing insert is retried with backoff; if it keeps
failing the loop stops uncommitted (the supervisor restarts it and ``health`` says so).

Inserts run on a writer thread while the next batch is decoded (as snuba does), with a
queue of one batch for backpressure; batches are written and committed strictly in order.
On SIGTERM, or a partition revocation, the loop flushes what it has and commits first.

Every ``status_interval_s`` the sink adds a ``heartbeats`` row about itself (and any rows
``status_rows`` supplies) to the batch being built, so liveness is landed like data.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas import topics
from sinks.clickhouse import Batch, BatchPolicy, ClickHouseWriter
from sinks.decode import Rejection, decode, decode_metric, decode_signal
from sinks.dlq import DeadLetters
from sinks.rows import event_row, heartbeat_row, metric_row, signal_row, worker_heartbeat_row

log = logging.getLogger(__name__)

WRITE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
"""Pauses between attempts of one batch's insert before the loop gives up uncommitted."""


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_STOP = object()


class Sink:
    def __init__(
        self,
        consumer_config: Mapping[str, Any],
        writer: ClickHouseWriter,
        dead_letters: DeadLetters,
        *,
        policy: BatchPolicy | None = None,
        max_event_bytes: int = 256 * 1024,
        topics_: tuple[str, ...] = (topics.EVENTS, topics.CONTROL, topics.METRICS),
        on_batch: Callable[[SinkStats], None] | None = None,
        status_interval_s: float = 5.0,
        stall_after_s: float = 30.0,
        status_rows: Callable[[SinkStats], list[list[Any]]] | None = None,
    ):
        self.topics = list(topics_)
        self.policy = policy or BatchPolicy()
        self.max_event_bytes = max_event_bytes
        self.writer = writer
        self.dead_letters = dead_letters
        self.stats = SinkStats()
        self.on_batch = on_batch
        self.status_interval_s = status_interval_s
        self.stall_after_s = stall_after_s
        self.status_rows = status_rows
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._consumer = Consumer(dict(consumer_config))
        self._stop = threading.Event()
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._written: queue.Queue[Batch | BaseException] = queue.Queue()
        self._in_flight = 0
        self._batch = Batch()
        self._next_status = 0.0
        self._progress_at = time.monotonic()
        self.committed: dict[tuple[str, int], int] = {}
        """(topic, partition) → the next offset, as last committed by this sink"""
        self._writer_thread = threading.Thread(target=self._write_loop, name="sink-writer",
                                               daemon=True)

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to flush, commit and return (safe from a signal handler)."""
        self._stop.set()

    def run(self, max_idle_s: float | None = None) -> SinkStats:
        """Consume until :meth:`stop` (or ``max_idle_s`` without messages, for tests)."""
        self._writer_thread.start()
        self._consumer.subscribe(self.topics, on_revoke=self._on_revoke)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(num_messages=5000, timeout=0.2)
                if messages:
                    idle_since = time.monotonic()
                for msg in messages:
                    self._add(self._batch, msg)
                self._commit_written(block=False)
                self._report_status()
                if self._batch.full(self.policy):
                    self._flush_batch()
                elif not self._batch.offsets and not self._batch.heartbeats:
                    self._batch.opened = time.monotonic()
                if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            self._flush_batch()
            self._drain()
        finally:
            self._pending.put(_STOP)
            self._writer_thread.join(timeout=60)
            self._consumer.close()
        return self.stats

    # -- per message -----------------------------------------------------------------

    def _add(self, batch: Batch, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": err.str()})
            return
        value = msg.value()
        self.stats.consumed += 1
        self.stats.uncommitted += 1
        try:
            rejection = self._route(batch, msg, value)
        except Exception as exc:  # a row that cannot be built is input too: reject it
            rejection = Rejection("unstorable", f"{type(exc).__name__}: {str(exc)[:1000]}")
        if rejection is not None:
            batch.rejected.append(self.dead_letters.reject(msg, rejection))
            self.stats.rejected += 1
            log.info("event rejected", extra={"reason": rejection.reason,
                                              "error": rejection.error[:200],
                                              "partition": msg.partition(),
                                              "offset": msg.offset()})
        batch.track(msg.topic(), msg.partition(), msg.offset(), len(value or b""))

    def _route(self, batch: Batch, msg: Any, value: bytes | None) -> Rejection | None:
        """Append the message's row to ``batch``, or say why it is rejected."""
        topic = msg.topic()
        if topic == topics.CONTROL:
            signal = decode_signal(value, self.max_event_bytes)
            if signal is None or isinstance(signal, Rejection):
                return signal
            assert value is not None
            if signal.kind == "heartbeat":
                batch.heartbeats.append(worker_heartbeat_row(signal))
            else:
                batch.signals.append(signal_row(signal, value, msg.partition(), msg.offset()))
            return None
        if topic == topics.METRICS:
            metric = decode_metric(value, self.max_event_bytes)
            if isinstance(metric, Rejection):
                return metric
            batch.metrics.append(metric_row(metric))
            return None
        event = decode(value, self.max_event_bytes)
        if isinstance(event, Rejection):
            return event
        assert value is not None
        batch.events.append(event_row(event, value, msg.partition(), msg.offset()))
        return None

    # -- liveness --------------------------------------------------------------------

    def _report_status(self) -> None:
        now = time.monotonic()
        if now < self._next_status:
            return
        self._next_status = now + self.status_interval_s
        self.stats.lag_events = self._lag()
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

    def _lag(self) -> int:
        """Messages between this sink's position and the end of its partitions."""
        try:
            assigned = self._consumer.assignment()
            if not assigned:
                return 0
            behind = 0
            for tp in self._consumer.position(assigned):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                if tp.offset >= 0 and high >= 0:
                    behind += max(0, high - tp.offset)
            return behind
        except KafkaException:
            return -1

    # -- writing and committing ------------------------------------------------------

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, Batch()
        if batch.offsets or batch.heartbeats:
            self._submit(batch)

    def _submit(self, batch: Batch) -> None:
        self._in_flight += 1
        while True:
            try:
                self._pending.put(batch, timeout=0.2)
                return
            except queue.Full:
                self._commit_written(block=False)

    def _write_loop(self) -> None:
        while True:
            batch = self._pending.get()
            if batch is _STOP:
                return
            try:
                self.dead_letters.flush()
                self._write_with_retries(batch)
            except BaseException as exc:  # handed to the loop, which stops uncommitted
                self._written.put(exc)
                return
            self._written.put(batch)

    def _write_with_retries(self, batch: Batch) -> None:
        for pause in (*WRITE_BACKOFF_S, None):
            try:
                self.writer.write(batch)
                return
            except Exception as exc:
                if pause is None or self._stop.is_set():
                    raise
                self.stats.write_retries += 1
                log.warning("insert failed; retrying", extra={"error": str(exc)[:500],
                                                              "retry_in_s": pause})
                time.sleep(pause)  # backoff before the next attempt, not synchronisation

    def _commit_written(self, block: bool) -> None:
        while self._in_flight:
            try:
                done = self._written.get(timeout=60 if block else 0)
            except queue.Empty:
                if block:
                    raise TimeoutError("ClickHouse insert did not finish in 60s") from None
                return
            self._in_flight -= 1
            if isinstance(done, BaseException):
                raise RuntimeError(f"batch not written, offsets not committed: {done}") from done
            self._commit(done)

    def _commit(self, batch: Batch) -> None:
        self._progress_at = time.monotonic()
        if not batch.offsets:  # status rows only: nothing consumed, nothing to commit
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        self.stats.batches += 1
        self.stats.inserted += len(batch.events)
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

    def _drain(self) -> None:
        self._commit_written(block=True)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything read so far is written and committed before the partitions move, so
        # the new owner starts where this one stopped.
        self._flush_batch()
        self._drain()
