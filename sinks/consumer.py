"""The sink loop: ``agent.events`` → validate → batch → ClickHouse → commit.

It lands the control loop's output the same way: ``agent.control`` into
``control_signals`` (heartbeats and tombstones are not landed) and ``agent.metrics`` into
``metrics``; anything on them that fails its schema goes to the DLQ like a bad event.

Delivery guarantee: at-least-once. A batch's offsets are committed only after
ClickHouse acknowledged its rows *and* Kafka acknowledged its dead letters; a crash
before that (``kill -9`` included) means the batch is consumed again. Redelivered events
carry the same ``event_id``/``ts``/``tenant`` and so the same ReplacingMergeTree key:
``SELECT … FINAL`` (which every project query uses) shows each event once.

Inserts run on a writer thread while the next batch is decoded (as snuba does), with a
queue of one batch for backpressure; batches are written and committed strictly in order.
On SIGTERM, or a partition revocation, the loop flushes what it has and commits first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas import topics
from sinks.clickhouse import Batch, BatchPolicy, ClickHouseWriter
from sinks.decode import Rejection, decode, decode_metric, decode_signal
from sinks.dlq import DeadLetters
from sinks.rows import event_row, metric_row, signal_row

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    consumed: int = 0
    inserted: int = 0
    rejected: int = 0
    batches: int = 0
    committed_batches: int = 0

    def as_dict(self) -> dict[str, int]:
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
    ):
        self.topics = list(topics_)
        self.policy = policy or BatchPolicy()
        self.max_event_bytes = max_event_bytes
        self.writer = writer
        self.dead_letters = dead_letters
        self.stats = SinkStats()
        self.on_batch = on_batch
        self._consumer = Consumer(dict(consumer_config))
        self._stop = threading.Event()
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._written: queue.Queue[Batch | BaseException] = queue.Queue()
        self._in_flight = 0
        self._batch = Batch()
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
                if self._batch.full(self.policy):
                    self._flush_batch()
                elif not self._batch.offsets:
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
        topic = msg.topic()
        decoded: Any
        if topic == topics.CONTROL:
            decoded = decode_signal(value, self.max_event_bytes)
            if decoded is not None and not isinstance(decoded, Rejection):
                batch.signals.append(signal_row(decoded, value, msg.partition(), msg.offset()))
                decoded = None
        elif topic == topics.METRICS:
            decoded = decode_metric(value, self.max_event_bytes)
            if not isinstance(decoded, Rejection):
                batch.metrics.append(metric_row(decoded))
                decoded = None
        else:
            decoded = decode(value, self.max_event_bytes)
        if decoded is None:
            pass
        elif isinstance(decoded, Rejection):
            batch.rejected.append(self.dead_letters.reject(msg, decoded))
            self.stats.rejected += 1
            log.info("event rejected", extra={"reason": decoded.reason, "error": decoded.error,
                                              "partition": msg.partition(),
                                              "offset": msg.offset()})
        else:
            batch.events.append(event_row(decoded, value, msg.partition(), msg.offset()))
        batch.track(msg.topic(), msg.partition(), msg.offset(), len(value or b""))

    # -- writing and committing ------------------------------------------------------

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, Batch()
        if batch.offsets:
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
                self.writer.write(batch)
            except BaseException as exc:  # handed to the loop, which stops uncommitted
                self._written.put(exc)
                return
            self._written.put(batch)

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
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        self.stats.batches += 1
        self.stats.inserted += len(batch.events)
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.committed_batches += 1
        except KafkaException as exc:
            # The rows are in ClickHouse; the worst case is a redelivery, which dedups.
            log.warning("offset commit failed", extra={"error": str(exc)})
        if self.on_batch:
            self.on_batch(self.stats)

    def _drain(self) -> None:
        self._commit_written(block=True)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything read so far is written and committed before the partitions move, so
        # the new owner starts where this one stopped.
        self._flush_batch()
        self._drain()
