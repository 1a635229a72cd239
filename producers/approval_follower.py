"""Following ``agent.approvals`` from the agent side (see :mod:`agentledger.schemas.approvals`).

An :class:`ApprovalFollower` reads the compacted topic from the beginning on a background
thread and keeps the newest state per approval id, so an agent waiting for approval does a
dict lookup, and an agent that restarts (or resumes a request later by its id) finds the
decision already made.

It obeys only the ledger (``core/signing.py``): with a trusted key, a state that is not
signed by it — produced straight to the topic by anyone who can reach Kafka — is ignored,
counted in :attr:`ApprovalFollower.refused` and logged, whatever its version. And an
agent takes a decision only for the request it made (:meth:`ApprovalState.decides`, used by
``ToolGuard.resume``; :meth:`ApprovalFollower.decision` also counts the misses): same
approval id, tenant, agent and run, decided before the request expired.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from agentledger.core import signing
from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.core.settings import load_settings
from agentledger.schemas.approvals import APPROVALS_TOPIC, ApprovalState

log = logging.getLogger(__name__)


def ensure_approvals_topic(bootstrap: str, security: dict[str, str] | None = None) -> None:
    """Create the compacted approvals topic if it is missing (idempotent)."""
    ensure_topics(client_config(bootstrap, "admin", extra=security),
                  [TopicSpec(APPROVALS_TOPIC, 1, {"cleanup.policy": "compact"})])


class ApprovalFollower:
    """The current state of every approval, in memory."""

    def __init__(self, bootstrap: str, *, security: dict[str, str] | None = None,
                 topic: str = APPROVALS_TOPIC, poll_s: float = 0.05,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto"):
        """``trusted``: the ledger keys to verify with; ``"auto"`` finds them from the
        settings (:func:`agentledger.core.signing.trusted_keys`), None obeys states unverified."""
        self.topic = topic
        if trusted == "auto":
            trusted = signing.trusted_keys(load_settings(), bootstrap)
        self.verifier = signing.Verifier(trusted, signing.APPROVAL, topic)
        self.mismatched = 0
        """Decided states seen for a waiting request that decide another one (tenant,
        agent or run differ) or came after its expiry: not taken."""
        self._mismatch_seen: set[tuple[str, int]] = set()
        self.state: dict[str, ApprovalState] = {}
        self.invalid = 0
        self._bootstrap = bootstrap
        self._security = security
        self._poll_s = poll_s
        self._consumer = Consumer(client_config(
            bootstrap, "consumer", group_id=f"agentledger-approvals-{uuid.uuid4().hex[:12]}",
            extra=security, **{"fetch.wait.max.ms": 20, "enable.partition.eof": False}))
        self._stop = threading.Event()
        self._target: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, name="approval-follower",
                                        daemon=True)

    def start(self) -> ApprovalFollower:
        ensure_approvals_topic(self._bootstrap, self._security)
        meta = self._consumer.list_topics(self.topic, timeout=10)
        found = meta.topics.get(self.topic)
        partitions = sorted(found.partitions) if found and found.error is None else [0]
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                               for p in partitions])
        for p in partitions:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                             timeout=10)
            if high > low:
                self._target[p] = high
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    def __enter__(self) -> ApprovalFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(num_messages=500, timeout=self._poll_s):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("approvals topic error", extra={"error": error.str()})
                    continue
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None  # a message, not an error
                self._next[partition] = offset + 1
                self.apply(msg.value())

    def apply(self, value: bytes | None) -> None:
        """Keep ``value`` if the ledger signed it and it is newer than what we have for its
        approval. A tombstone never removes a state (it could not be signed)."""
        if value is None:
            self.verifier.refuse("tombstone")
            return
        try:
            raw = orjson.loads(value)
            state = ApprovalState.model_validate(raw)
        except (orjson.JSONDecodeError, ValidationError):
            self.invalid += 1
            return
        if not self.verifier.admit(raw, state.approval_id):
            return
        current = self.state.get(state.approval_id)
        if current is None or state.version > current.version:
            self.state[state.approval_id] = state

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until every record that existed at start has been read."""
        return self.wait_for(lambda: all(self._next.get(p, 0) >= high
                                         for p, high in self._target.items()), timeout_s)

    def get(self, approval_id: str) -> ApprovalState | None:
        return self.state.get(approval_id)

    def decision(self, approval_id: str, *, tenant: str, agent: str, run_id: str,
                 expires_at: datetime | None) -> ApprovalState | None:
        """The decided state of the request this agent made, or None: a state for the id
        that decides another tenant's, agent's or run's request, or was decided after
        ``expires_at``, is not this request's decision (counted in :attr:`mismatched`)."""
        state = self.state.get(approval_id)
        if state is None or not state.final:
            return None
        if state.decides(approval_id=approval_id, tenant=tenant, agent=agent, run_id=run_id,
                         expires_at=expires_at):
            return state
        if (approval_id, state.version) in self._mismatch_seen:
            return None
        self._mismatch_seen.add((approval_id, state.version))
        self.mismatched += 1
        log.warning("approval state does not decide this request: not taken", extra={
            "approval_id": approval_id, "tenant": state.tenant, "agent": state.agent,
            "run_id": state.run_id, "resolved_at": str(state.resolved_at)})
        return None

    @property
    def refused(self) -> dict[str, int]:
        """States not obeyed, by reason: unsigned, forged, tombstone."""
        return {k: v for k, v in self.verifier.counts.items()
                if k not in ("verified", "unverified")}

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()
