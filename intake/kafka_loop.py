"""``agentledger intake``: the OpenTelemetry Collector's Kafka exporter → ledger events.

Reads ``otlp_spans`` (the exporter's default topic), ``otlp_proto`` or ``otlp_json``
encoded (``auto`` tells them apart by the first byte), keyed by trace id
(``partition_traces_by_id``) or not, 1..N spans per message, one trace over many
messages. Runs are assembled as in :mod:`agentledger.intake.runs` and published to
``agent.events``; refused spans, and messages that are not OTLP at all, go to the DLQ.

At-least-once: offsets are committed only after Kafka acknowledged the events of every
run whose spans lie before the commit point. Per partition that point is the first
offset of (a) any still-open trace and (b) any closed trace whose messages straddle it,
so a restart re-reads every message of every run it has to rebuild, and a rebuilt run is
byte-identical (ids derive from spans), so the sink's ``event_id`` dedup hides it. A
partition whose offsets jump is read again from the missing one (``core/offsets.py``),
so the commit point never passes a message this consumer did not see.

With several intake instances, keep one trace on one partition
(``partition_traces_by_id: true`` in the Collector); one instance handles unkeyed input.

Poison never crash-loops the intake: a message that is not OTLP, or whose decoding or
mapping raises anything at all, is dead-lettered whole with its reason and its offset
counts as read (so the commit point moves past it); a span that cannot be an event is
dead-lettered alone, each span its own ``rejected_events`` row (its message's topic,
partition and offset are in the evidence); a run that fails to build has its spans
dead-lettered (``run_unbuildable``) and the loop goes on. Only Kafka failing to take our
output stops the loop (nothing is committed then, so a restart re-reads it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from agentledger.core.dead_letters import Rejection
from agentledger.core.offsets import GapGuard
from agentledger.core.settings import Settings
from agentledger.intake.publisher import CloserBeat, Publisher
from agentledger.intake.runs import Assembler
from agentledger.intake.spans import PayloadError, decode

log = logging.getLogger(__name__)

OTLP_TOPIC = "otlp_spans"
INTAKE_GROUP = "agentledger-intake"


@dataclass
class IntakeStats:
    messages: int = 0
    spans: int = 0
    runs: int = 0
    events: int = 0
    rejected_spans: int = 0
    rejected_messages: int = 0
    unprocessable_messages: int = 0
    """messages whose processing raised: dead-lettered whole, the offset moved on"""
    failed_runs: int = 0
    """runs that could not be built: their spans dead-lettered"""
    duplicates: int = 0
    commits: int = 0
    gaps_refetched: int = 0
    """times a partition skipped offsets and was read again from the missing one"""
    gaps_accepted: int = 0
    """offsets never delivered after asking again (``core/offsets.py``)"""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Partition:
    next_offset: int = -1
    committed: int = -1
    closed: list[tuple[int, int]] = field(default_factory=list)


def commit_point(next_offset: int, first_open: int | None,
                 closed: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """The offset safe to commit on one partition, and the closed runs still to remember.

    Not past the first message of a still-open trace, nor inside a closed run's messages
    (a restart would re-read only part of it and rebuild it wrong); runs wholly before the
    point are forgotten.
    """
    point = next_offset if first_open is None else min(next_offset, first_open)
    moved = True
    while moved:  # pull the point back before any closed run it would split
        moved = False
        for first, last in closed:
            if first < point <= last:
                point, moved = first, True
    return point, [(first, last) for first, last in closed if last >= point]


class KafkaIntake:
    def __init__(self, consumer_config: dict[str, Any], publisher: Publisher,
                 assembler: Assembler, *, tenant: str, topic: str = OTLP_TOPIC,
                 encoding: str = "auto", settings: Settings | None = None):
        self.publisher = publisher
        self.assembler = assembler
        self.tenant = tenant
        self.topic = topic
        self.encoding = encoding
        self.stats = IntakeStats()
        self._consumer = Consumer(consumer_config)
        # the Collector's exporter is not transactional and the topic is not compacted,
        # so a jump in offsets is records this consumer missed: read them again
        self.gaps = GapGuard(self._consumer.seek, (topic,))
        self._parts: dict[int, _Partition] = {}
        self._stop = threading.Event()
        self.beat = CloserBeat(settings, "kafka", assembler) if settings is not None else None
        """This loop closes the runs too: its beat is the Kafka closer's liveness."""

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_idle_s: float | None = None) -> IntakeStats:
        """Consume until :meth:`stop` (or ``max_idle_s`` with nothing new and nothing open)."""
        self._consumer.subscribe([self.topic], on_revoke=self._revoked, on_lost=self._revoked)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(500, timeout=0.2)
                self.gaps.next_poll()
                for msg in messages:
                    self._take(msg)
                if messages or self.assembler.open_traces:
                    idle_since = time.monotonic()
                self._close_and_commit()
                if self.beat is not None:
                    self.beat.beat()
                if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            self._close_and_commit()
        finally:
            self._consumer.close()
            if self.beat is not None:
                self.beat.withdraw()
        return self.stats

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Publish and commit what is complete, then drop the rest of those partitions: a
        half-seen run must not be closed here while its new owner rebuilds it whole."""
        gone = {tp.partition for tp in partitions}
        self.gaps.forget(partitions)
        try:
            self._close_and_commit()
        except Exception as exc:  # the commit may fail once the partitions are gone
            log.warning("commit on revoke failed", extra={"error": str(exc)})
        dropped = self.assembler.discard_partitions(gone)
        for part in gone:
            self._parts.pop(part, None)
        log.info("partitions revoked", extra={"partitions": sorted(gone), "dropped": dropped})

    def _take(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("intake consume error", extra={"error": error.str()})
            return
        part, offset = msg.partition(), msg.offset()
        assert part is not None and offset is not None  # a message, not an error
        if not self.gaps.admit(msg.topic() or self.topic, part, offset):
            return  # fetched again from the offset this consumer skipped
        state = self._parts.setdefault(part, _Partition())
        state.next_offset = max(state.next_offset, offset + 1)
        self.stats.messages += 1
        try:
            spans = decode(msg.value() or b"", self.encoding)
            result = self.assembler.add(spans, self.tenant, (part, offset))
        except PayloadError as exc:
            self.stats.rejected_messages += 1
            self.publisher.dead_letters.reject(msg, Rejection("otlp_invalid", str(exc)))
            return
        except Exception as exc:  # poison, not an outage: dead-letter it, read on
            self.stats.rejected_messages += 1
            self.stats.unprocessable_messages += 1
            log.exception("OTLP message not processable", extra={
                "partition": part, "offset": offset, "error": str(exc)})
            self.publisher.dead_letters.reject(msg, Rejection(
                "otlp_unprocessable", f"{type(exc).__name__}: {str(exc)[:1000]}"))
            return
        self.stats.spans += len(spans)
        self.stats.duplicates += result.duplicates
        if result.rejected:
            self.stats.rejected_spans += len(result.rejected)
            topic = msg.topic() or self.topic
            self.publisher.reject(result.rejected, topic=topic, partition=part, source={
                "topic": topic, "partition": part, "offset": offset})

    def _close_and_commit(self) -> None:
        closed = 0
        for run in self.assembler.iter_due():
            self.stats.runs += bool(run.events)
            self.stats.events += self.publisher.publish(run.events)
            closed += len(run.events)
            if run.rejected:  # the run could not be built: its spans to the DLQ, with why
                self.stats.failed_runs += 1
                self.stats.rejected_spans += len(run.rejected)
                part, (first, last) = min(run.positions.items(), default=(0, (-1, -1)))
                self.publisher.reject(run.rejected, topic=self.topic, partition=part,
                                      source={"topic": self.topic, "partition": part,
                                              "offsets": [first, last]})
                if self.beat is not None:
                    self.beat.spans_refused += len(run.rejected)
            for part, interval in run.positions.items():
                self._parts.setdefault(part, _Partition()).closed.append(interval)
        if self.beat is not None:
            self.beat.closed(closed)
        self.publisher.flush(30)  # raises before any commit if Kafka refused something
        self._commit()
        self.stats.gaps_refetched = self.gaps.gaps_refetched
        self.stats.gaps_accepted = self.gaps.gaps_accepted

    def _commit(self) -> None:
        opens = self.assembler.open_first_offsets()
        offsets = []
        for part, state in self._parts.items():
            if state.next_offset < 0:
                continue
            point, state.closed = commit_point(state.next_offset, opens.get(part),
                                               state.closed)
            if point > state.committed:
                state.committed = point
                offsets.append(TopicPartition(self.topic, part, point))
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
