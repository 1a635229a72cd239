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
from datetime import datetime
from typing import Literal, Self

import orjson
from pydantic import ValidationError

from agentledger.core import signing
from agentledger.core.follower import CompactedFollower
from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.schemas.approvals import APPROVALS_TOPIC, ApprovalState

log = logging.getLogger(__name__)


def ensure_approvals_topic(bootstrap: str, security: dict[str, str] | None = None) -> None:
    """Create the compacted approvals topic if it is missing (idempotent)."""
    ensure_topics(client_config(bootstrap, "admin", extra=security),
                  [TopicSpec(APPROVALS_TOPIC, 1, {"cleanup.policy": "compact"})])


class ApprovalFollower(CompactedFollower):
    """The current state of every approval, in memory (:mod:`agentledger.core.follower`)."""

    def __init__(self, bootstrap: str, *, security: dict[str, str] | None = None,
                 topic: str = APPROVALS_TOPIC, poll_s: float = 0.05,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto"):
        """``trusted``: the ledger keys to verify with (see :class:`CompactedFollower`)."""
        super().__init__(bootstrap, topic, purpose=signing.APPROVAL, trusted=trusted,
                         security=security, poll_s=poll_s, name="approvals")
        self.mismatched = 0
        """Decided states seen for a waiting request that decide another one (tenant,
        agent or run differ) or came after its expiry: not taken."""
        self._mismatch_seen: set[tuple[str, int]] = set()
        self.state: dict[str, ApprovalState] = {}
        self.invalid = 0
        self._bootstrap = bootstrap
        self._security = security

    def start(self) -> Self:
        ensure_approvals_topic(self._bootstrap, self._security)
        return super().start()

    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        return self.apply(value)

    def apply(self, value: bytes | None) -> bool:
        """Keep ``value`` if the ledger signed it and it is newer than what we have for its
        approval; True if it was the ledger's. A tombstone never removes a state (it could
        not be signed)."""
        if value is None:
            self.verifier.refuse("tombstone")
            return False
        try:
            raw = orjson.loads(value)
            state = ApprovalState.model_validate(raw)
        except (orjson.JSONDecodeError, ValidationError):
            self.invalid += 1
            return False
        if not self.verifier.admit(raw, state.approval_id):
            return False
        current = self.state.get(state.approval_id)
        if current is None or state.version > current.version:
            self.state[state.approval_id] = state
        return True

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

