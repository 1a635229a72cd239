"""The contiguity step: a record the consumer skipped is fetched again, never committed past.

Why: on ``agent.events`` (neither compacted nor transactional) a partition's offsets are
contiguous, so a message whose offset jumps past the next expected one means records
this consumer never saw. Committing after it would lose them for good. It happened: in a
1M-event end-to-end run against the embedded broker, the sink's consumer went from
offset 257389 to 257399 of one partition while the producer was still writing. The nine
records in between (one whole run) were in the broker, the stream worker had read them,
and a consumer that asked for them later got them.

Guarantee: on a topic in ``contiguous_topics``, a message past the expected offset is not
admitted; the partition is sought back to the expected offset (once per poll) and every
message of it is skipped until that offset arrives. A message is skipped only when a
seek will bring it again. When the same gap is still there after ``wait_s``, or the seek
itself is refused, the gap is taken as real: admitted, counted in ``gaps_accepted`` and
logged with its range. Compacted topics (``agent.control``) have gaps by design and are
not checked. What the guard expects is forgotten when a partition is revoked, so a
partition that comes back starts from whatever offset it is handed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaException, TopicPartition

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class GapGuard:
    def __init__(self, seek: Callable[[TopicPartition], None],
                 contiguous_topics: Iterable[str], *, wait_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.seek = seek
        self.contiguous = frozenset(contiguous_topics)
        self.wait_s = wait_s
        self.clock = clock
        self.gaps_refetched = 0
        """gaps seen and asked for again (one per partition per poll)"""
        self.gaps_accepted = 0
        """records never delivered after ``wait_s`` of asking: taken as a real gap"""
        self._expected: dict[Partition, int] = {}
        self._gap_since: dict[Partition, float] = {}
        self._sought: set[Partition] = set()

    def next_poll(self) -> None:
        """Call once per consume call: a gap seen again in the next one is asked again."""
        self._sought.clear()

    def admit(self, topic: str, partition: int, offset: int) -> bool:
        """True to process the message; False to skip it (its partition is being re-read
        from the missing offset, and it will come again)."""
        key = (topic, partition)
        expected = self._expected.get(key)
        if expected is None or offset <= expected or topic not in self.contiguous:
            self._expected[key] = offset + 1
            self._gap_since.pop(key, None)
            return True
        now = self.clock()
        since = self._gap_since.setdefault(key, now)
        if key in self._sought:
            return False  # this poll's seek covers it
        if now - since < self.wait_s:
            try:
                self.seek(TopicPartition(topic, partition, expected))
            except KafkaException as exc:
                # Messages are skipped only while a seek will bring them again; with no
                # seek (the partition is moving, or not fetching yet), skip nothing more.
                log.warning("gap refetch not possible", extra={"error": str(exc)})
            else:
                self._sought.add(key)
                self.gaps_refetched += 1
                log.info("offset gap; fetching again", extra={
                    "topic": topic, "partition": partition, "expected": expected,
                    "got": offset})
                return False
        self.gaps_accepted += offset - expected
        log.warning("offsets never delivered; taken as a gap", extra={
            "topic": topic, "partition": partition, "from": expected, "to": offset - 1,
            "waited_s": round(now - since, 1)})
        self._expected[key] = offset + 1
        del self._gap_since[key]
        return True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._expected.pop(key, None)
            self._gap_since.pop(key, None)
            self._sought.discard(key)
