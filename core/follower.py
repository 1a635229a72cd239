"""The one compacted-topic follower: read a compacted topic from its beginning on a thread.

A compacted topic (``agent.control``, ``agent.approvals``) holds the current state of every
key, not its history, so a follower assigns every partition at offset 0 (no consumer group
offsets, no rebalances: a random group id per process), reads on a background thread and
hands each record to :meth:`CompactedFollower.apply_record`. What a record means is the
subclass's (``ControlFollower``, ``ApprovalFollower``); which records count is the ledger's
signature, checked by the follower's :class:`~agentledger.core.signing.Verifier`.

Delivery: every record the topic holds is applied at least once, in partition order; the
subclasses apply by version, so a record read twice (after a rewind) changes nothing.
After every broker was lost, the topic is read again from the start: a broker that kept its
data in memory (the embedded one) comes back with the topic re-created, and a follower's
position may lie at or past its new end, where nothing would ever arrive.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Self

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from agentledger.core import signing
from agentledger.core.kafka import client_config
from agentledger.core.settings import load_settings

log = logging.getLogger(__name__)


class CompactedFollower:
    """Reads ``topic`` from the start of every partition until :meth:`close`."""

    def __init__(self, bootstrap: str, topic: str, *, purpose: str,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto",
                 security: dict[str, str] | None = None, poll_s: float = 0.05,
                 name: str = "follower"):
        """``purpose``: what the ledger's signatures on this topic are for
        (:data:`~agentledger.core.signing.CONTROL`, ``APPROVAL``); ``trusted``: the ledger
        keys to verify with, ``"auto"`` to find them from the settings
        (:func:`~agentledger.core.signing.trusted_keys`), None to obey records unverified."""
        self.topic = topic
        if trusted == "auto":
            trusted = signing.trusted_keys(load_settings(), bootstrap)
        self.verifier = signing.Verifier(trusted, purpose, topic)
        self.last_heard = 0.0
        """time.monotonic() of the last record :meth:`apply_record` took (0 = never)."""
        self.started = time.monotonic()
        self._poll_s = poll_s
        self._name = name
        tuned: dict[str, Any] = {"fetch.wait.max.ms": 20, "fetch.error.backoff.ms": 50,
                                 "enable.partition.eof": False, "error_cb": self._on_error}
        self._consumer = Consumer(client_config(
            bootstrap, "consumer", group_id=f"agentledger-{name}-{uuid.uuid4().hex[:12]}",
            extra=security, **tuned))
        self._lost_broker = False
        self._target: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record; True if it counts as hearing from the topic's writer."""
        raise NotImplementedError

    @property
    def refused(self) -> dict[str, int]:
        """Records not obeyed, by reason (unsigned, forged, tombstone, future...)."""
        return {k: v for k, v in self.verifier.counts.items()
                if k not in ("verified", "unverified")}

    def start(self) -> Self:
        partitions = self._assign_from_start()
        for p in partitions:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                             timeout=10)
            if high > low:
                self._target[p] = high
        self.started = time.monotonic()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _assign_from_start(self, timeout_s: float = 10) -> list[int]:
        meta = self._consumer.list_topics(self.topic, timeout=timeout_s)
        found = meta.topics.get(self.topic)
        partitions = sorted(found.partitions) if found is not None and found.error is None \
            else [0]
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                               for p in partitions])
        return partitions

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._lost_broker = True

    def _rewind_after_outage(self) -> None:
        """Read the topic again from the start once a broker answers (see the module doc).
        Cheap (one record per key) and safe (records apply by version)."""
        try:
            self._assign_from_start(timeout_s=1)
        except KafkaException:
            return  # still down; try again on the next poll
        self._lost_broker = False
        log.warning("compacted topic re-read after a broker outage", extra={"topic": self.topic})

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._lost_broker:
                self._rewind_after_outage()
            for msg in self._consumer.consume(num_messages=500, timeout=self._poll_s):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("compacted topic error",
                                    extra={"topic": self.topic, "error": error.str()})
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # a message, not an error
                self._next[partition] = offset + 1
                if self.apply_record(msg.key(), msg.value()):
                    self.last_heard = time.monotonic()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until every record the topic held at :meth:`start` has been read."""
        return self.wait_for(lambda: all(self._next.get(p, 0) >= high
                                         for p, high in self._target.items()), timeout_s)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``predicate`` until it holds or ``timeout_s`` passes; its last answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return predicate()
