"""Each sink step on its own, with in-memory stand-ins for the consumer, the writer and
the dead-letter queue (the integration tests run the same loop on a real broker and chdb)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from agentledger.core.dead_letters import Rejection
from agentledger.core.offsets import GapGuard
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal
from agentledger.sinks.clickhouse import Batch, BatchPolicy
from agentledger.sinks.consumer import Sink
from agentledger.sinks.routes import DecodeStep
from agentledger.sinks.writer import WriteFailed, WriteStep


def sdk_events(runs: int = 3) -> list[dict]:
    captured: list[dict] = []

    class Capture(Ledger):
        def send(self, event, traceparent):
            captured.append(event)

    Simulator(lambda ident: Capture({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
                                    ident),
              seed=2).run(runs)
    return captured


@dataclass
class Message:
    topic_: str
    value_: bytes | None
    partition_: int = 0
    offset_: int = 0
    key_: bytes | None = b"k"

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.topic_

    def value(self) -> bytes | None:
        return self.value_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


@dataclass
class MemoryConsumer:
    """Hands out its messages once, records commits, stops the sink when drained."""

    messages: list[Message]
    per_poll: int = 2
    sink: Any = None
    commits: list[list[tuple[str, int, int]]] = field(default_factory=list)

    def subscribe(self, topics, on_revoke=None):
        pass

    def consume(self, num_messages=5000, timeout=0.2):
        n = min(num_messages, self.per_poll)
        out, self.messages = self.messages[:n], self.messages[n:]
        if not out and self.sink is not None and self.sink.writes.in_flight == 0:
            self.sink.stop()
        return out

    def seek(self, partition):
        raise AssertionError(f"no offset was skipped, yet the sink sought {partition}")

    def commit(self, offsets=None, asynchronous=False):
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))

    def assignment(self):
        return [TopicPartition(topics.EVENTS, 0)]

    def position(self, partitions):
        return [TopicPartition(topics.EVENTS, 0, 0)]

    def get_watermark_offsets(self, partition, timeout=1, cached=False):
        return (0, 0)

    def close(self):
        pass


class MemoryWriter:
    def __init__(self, fail_times: int = 0):
        self.fail_times = fail_times
        self.batches: list[Batch] = []

    def write(self, batch: Batch) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("store unavailable")
        self.batches.append(batch)


class MemoryDeadLetters:
    def __init__(self):
        self.rejected: list[tuple[int, str]] = []
        self.flushes = 0

    def reject(self, msg, rejection: Rejection) -> list[Any]:
        self.rejected.append((msg.offset(), rejection.reason))
        return [msg.offset(), rejection.reason]

    def flush(self, timeout_s: float = 30) -> None:
        self.flushes += 1


def test_decode_step_routes_every_topic_and_never_raises():
    step = DecodeStep(256 * 1024)
    event = sdk_events(1)[0]
    table, row = step(topics.EVENTS, orjson.dumps(event), 1, 7)
    assert table == "events" and row[0] == event["event_id"] and row[-2:] == [1, 7]
    assert step("some.other.topic", orjson.dumps(event), 0, 0)[0] == "events"
    beat = ControlSignal(kind="heartbeat", scope="worker/w1", state="alive", version=1,
                         ts="2026-11-24T00:00:00Z", details={"lag_events": 3})
    assert step(topics.CONTROL, beat.to_json(), 0, 0)[0] == "heartbeats"
    assert step(topics.CONTROL, None, 0, 0) is None  # a compaction tombstone
    for garbage in (b"", b"\xff", b"[" * 5000, b'{"a": NaN}', b"{}"):
        assert isinstance(step(topics.EVENTS, garbage, 0, 0), Rejection), garbage
    assert step(topics.METRICS, b"{}", 0, 0).reason == "schema"

    def broken(*_args):
        raise OverflowError("value out of range")

    assert DecodeStep(1024, {topics.EVENTS: broken})(topics.EVENTS, b"{}", 0, 0) == \
        Rejection("unstorable", "OverflowError: value out of range")


def test_batch_closes_on_rows_bytes_or_age():
    batch = Batch()
    batch.events.append([1])
    batch.track(topics.EVENTS, 0, 0, 10)
    assert not batch.full(BatchPolicy(max_rows=2, max_bytes=100, max_seconds=60))
    assert batch.full(BatchPolicy(max_rows=1, max_bytes=100, max_seconds=60))
    assert batch.full(BatchPolicy(max_rows=2, max_bytes=10, max_seconds=60))
    batch.opened -= 61
    assert batch.full(BatchPolicy(max_rows=2, max_bytes=100, max_seconds=60))


def test_write_step_returns_batches_in_order_after_retries_and_dead_letters():
    writer, dead = MemoryWriter(fail_times=2), MemoryDeadLetters()
    step = WriteStep(writer, dead, backoff_s=(0.0, 0.0, 0.0))
    step.start()
    batches = [Batch(offsets={(topics.EVENTS, 0): n}) for n in (1, 2, 3)]
    for batch in batches:
        step.submit(batch, while_waiting=lambda: None)
    assert list(step.done(block=True, timeout_s=10)) == batches
    step.stop()
    assert writer.batches == batches and step.retries == 2
    assert dead.flushes == 3, "dead letters are acknowledged before each batch is written"


def test_write_step_hands_back_a_batch_it_could_not_write():
    step = WriteStep(MemoryWriter(fail_times=9), MemoryDeadLetters(), backoff_s=(0.0,))
    step.start()
    step.submit(Batch(offsets={(topics.EVENTS, 0): 1}), while_waiting=lambda: None)
    with pytest.raises(WriteFailed, match="offsets not committed"):
        list(step.done(block=True, timeout_s=10))
    step.stop()


def _loop(messages: list[Message], writer: MemoryWriter) -> tuple[MemoryConsumer,
                                                                   MemoryDeadLetters, Any]:
    consumer, dead = MemoryConsumer(messages), MemoryDeadLetters()
    sink = Sink(consumer, writer, dead, policy=BatchPolicy(max_rows=3, max_seconds=60),
                status_interval_s=3600)
    sink.writes.backoff_s = (0.0,)
    consumer.sink = sink
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_run(sink)), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return consumer, dead, result[0]


def _run(sink: Sink) -> Any:
    try:
        return sink.run()
    except WriteFailed as exc:
        return exc


def test_sink_commits_only_what_was_written_and_dead_letters_bad_input():
    values = [orjson.dumps(e) for e in sdk_events(1)[:4]]
    values.insert(2, b"not json")
    messages = [Message(topics.EVENTS, v, 0, offset) for offset, v in enumerate(values)]
    writer = MemoryWriter()
    consumer, dead, stats = _loop(messages, writer)
    assert dead.rejected == [(2, "invalid_json")]
    # two messages a poll, batches close at 3 rows: [e0 e1 | bad e2] then [e3]
    assert [len(b.events) for b in writer.batches] == [3, 1]
    assert [len(b.rejected) for b in writer.batches] == [1, 0]
    assert consumer.commits == [[(topics.EVENTS, 0, 4)], [(topics.EVENTS, 0, 5)]]
    assert stats.inserted == 4 and stats.rejected == 1 and stats.uncommitted == 0


def test_sink_commits_nothing_when_the_store_keeps_failing():
    events = sdk_events(1)[:3]
    messages = [Message(topics.EVENTS, orjson.dumps(e), 0, i) for i, e in enumerate(events)]
    consumer, _dead, outcome = _loop(messages, MemoryWriter(fail_times=99))
    assert isinstance(outcome, WriteFailed)
    assert consumer.commits == []


def test_a_dead_writer_with_a_batch_queued_does_not_hang_the_stop():
    step = WriteStep(MemoryWriter(fail_times=99), MemoryDeadLetters(), backoff_s=())
    step.start()
    step.submit(Batch(offsets={(topics.EVENTS, 0): 1}), while_waiting=lambda: None)
    step.submit(Batch(offsets={(topics.EVENTS, 0): 2}), while_waiting=lambda: None)
    stopper = threading.Thread(target=step.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "stop() must return when the writer is gone"
    with pytest.raises(WriteFailed):
        list(step.done(block=True, timeout_s=10))


class SkippingConsumer(MemoryConsumer):
    """A partition log read in order, except that the first pass jumps over ``hole``
    (as a consumer did against the embedded broker while the producer was writing);
    a seek re-reads the log from the offset asked for."""

    def __init__(self, log: list[Message], hole: range):
        super().__init__([m for m in log if m.offset_ not in hole], per_poll=2)
        self.log = log
        self.seeks: list[int] = []

    def seek(self, partition):
        self.seeks.append(partition.offset)
        self.messages = [m for m in self.log if m.offset_ >= partition.offset]


def test_gap_guard_refetches_a_skipped_range_and_accepts_only_a_lasting_gap():
    now = [0.0]
    seeks: list[tuple[str, int, int]] = []
    guard = GapGuard(lambda tp: seeks.append((tp.topic, tp.partition, tp.offset)),
                     {topics.EVENTS}, wait_s=5.0, clock=lambda: now[0])
    assert all(guard.admit(topics.EVENTS, 0, n) for n in (0, 1, 2))
    assert not guard.admit(topics.EVENTS, 0, 6), "3..5 never came"
    assert not guard.admit(topics.EVENTS, 0, 7)
    assert seeks == [(topics.EVENTS, 0, 3)], "one seek per partition per poll"
    assert guard.admit(topics.EVENTS, 1, 0), "other partitions go on"
    guard.next_poll()
    assert guard.admit(topics.EVENTS, 0, 3) and guard.admit(topics.EVENTS, 0, 4)
    assert guard.gaps_refetched == 1 and guard.gaps_accepted == 0

    assert not guard.admit(topics.EVENTS, 0, 9)  # 5..8 missing, and they stay missing
    now[0] = 4.9
    guard.next_poll()
    assert not guard.admit(topics.EVENTS, 0, 9)
    assert seeks[-1] == (topics.EVENTS, 0, 5) and guard.gaps_refetched == 3
    now[0] = 5.0
    guard.next_poll()
    assert guard.admit(topics.EVENTS, 0, 9), "after wait_s the gap is taken as real"
    assert guard.gaps_accepted == 4 and guard.admit(topics.EVENTS, 0, 10)

    assert guard.admit(topics.CONTROL, 0, 0) and guard.admit(topics.CONTROL, 0, 5), \
        "a compacted topic has gaps by design"
    guard.forget([TopicPartition(topics.EVENTS, 0)])
    assert guard.admit(topics.EVENTS, 0, 100), "a re-assigned partition starts anew"


def test_gap_guard_skips_nothing_when_the_seek_is_refused():
    """A message is skipped only if a seek will bring it again: a refused seek (the
    partition is moving, or not fetching yet) admits it, and the gap is counted."""

    def refused(tp):
        raise KafkaException(KafkaError(KafkaError._STATE))

    guard = GapGuard(refused, {topics.EVENTS})
    assert guard.admit(topics.EVENTS, 0, 0)
    assert guard.admit(topics.EVENTS, 0, 4) and guard.admit(topics.EVENTS, 0, 5)
    assert guard.gaps_accepted == 3 and guard.gaps_refetched == 0


def test_sink_reads_again_what_its_consumer_skipped_and_never_commits_past_it():
    events = sdk_events(2)[:9]
    log = [Message(topics.EVENTS, orjson.dumps(e), 0, i) for i, e in enumerate(events)]
    consumer = SkippingConsumer(log, hole=range(3, 6))
    writer = MemoryWriter()
    sink = Sink(consumer, writer, MemoryDeadLetters(),
                policy=BatchPolicy(max_rows=3, max_seconds=60), status_interval_s=3600)
    consumer.sink = sink
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert consumer.seeks == [3]
    landed = [row[0] for batch in writer.batches for row in batch.events]
    assert landed == [e["event_id"] for e in events], "every event, in offset order"
    committed = [offset for commit in consumer.commits for _t, _p, offset in commit]
    assert committed == sorted(committed) and committed[-1] == 9
    assert sink.stats.gaps_refetched == 1 and sink.stats.gaps_accepted == 0


@dataclass
class DeadLetter(Message):
    """A record on the DLQ topic, headers as
    :class:`~agentledger.core.dead_letters.DeadLetters` writes them."""

    headers_: list[tuple[str, bytes]] = field(default_factory=list)

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_


def _dead_letter(origin: str, offset: int, reason: str, at: int) -> DeadLetter:
    return DeadLetter(topics.DLQ, b'{"span": 1}', 0, at, b"trace", [
        (topics.H_REASON, reason.encode()), (topics.H_ERROR, b"bad ids"),
        (topics.H_TOPIC, origin.encode()), (topics.H_PARTITION, b"0"),
        (topics.H_OFFSET, str(offset).encode()), (topics.H_SIZE, b"11"),
        (topics.H_SHA256, b"ab" * 32)])


def test_sink_lands_what_the_intakes_dead_lettered_and_not_its_own_dead_letters_again():
    messages = [
        _dead_letter("otlp.http", 77, "invalid_span_id", 0),
        _dead_letter(topics.EVENTS, 5, "invalid_json", 1),  # the sink's own: landed already
        _dead_letter("otlp_spans", 3, "otlp_invalid", 2),
        DeadLetter(topics.DLQ, b"x", 0, 3, b"k", [(topics.H_TOPIC, b"otlp.http")]),  # torn
    ]
    writer = MemoryWriter()
    consumer, dead, stats = _loop(messages, writer)
    rows = [row for batch in writer.batches for row in batch.rejected]
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        ("otlp.http", 0, 77, "invalid_span_id"), ("otlp_spans", 0, 3, "otlp_invalid")]
    assert rows[0][4] == "trace" and rows[0][7] == 11 and rows[0][9] == '{"span": 1}'
    assert dead.rejected == [], "a dead letter is never dead-lettered again"
    assert stats.refusals_landed == 2 and stats.consumed == 0 and stats.uncommitted == 0
    assert consumer.commits[-1] == [(topics.DLQ, 0, 4)]
