"""The approval queue on the wire: ``agent.approvals``, compacted, keyed by approval id.

An agent asks for approval with an ``approval.requested`` event on its run (in
``agent.events``, landed in ClickHouse like every event). Approvers decide through the
ledger API, which publishes the request's whole current state here after every vote: the
topic keeps exactly one record per approval, the newest (``version`` grows by one per
vote), and the agent's SDK follows it the way the guard follows ``agent.control``. The
agent then records ``approval.resolved`` on its own run, so the run's hash chain stays the
agent's alone.

A state binds what it decides: tenant, agent, run and approval id are those of the *first*
``approval.requested`` stored for the id (a later one with the same id is refused), and the
SDK takes a decided state only for the request it made itself, decided before its expiry
(:meth:`ApprovalState.decides`). The API signs every state it publishes; the SDK obeys
only signed ones (``core/signing.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentledger.schemas.signals import Signature

APPROVALS_TOPIC: Final = "agent.approvals"
PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
EXPIRED: Final = "expired"
FINAL_STATES: Final = (APPROVED, REJECTED, EXPIRED)


class Vote(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    approver: str = Field(min_length=1, max_length=128, description="the API key's name")
    decision: Literal["approve", "deny"]
    reason: str = Field(default="", max_length=2048)
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Assignment(BaseModel):
    """A request handed on: to another queue (``to_role``, reassign) or to one named
    approver (``to_approver``, delegate), by whom and why. Kept in the state, so the
    hand-over is signed and recorded with the votes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(min_length=1, max_length=128, description="the API key's name")
    to_role: str | None = Field(default=None, min_length=1, max_length=128)
    to_approver: str | None = Field(default=None, min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=2048)
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ApprovalState(BaseModel):
    """The current state of one approval request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    approval_id: str = Field(min_length=1, max_length=128)
    tenant: str
    agent: str
    run_id: str
    action: str = ""
    approver_role: str
    approvals_required: int = Field(ge=1, le=10)
    status: Literal["pending", "approved", "rejected", "expired"] = PENDING
    votes: list[Vote] = Field(default_factory=list)
    version: int = Field(default=0, ge=0)
    requested_at: datetime
    resolved_at: datetime | None = None
    signature: Signature | None = Field(
        default=None, description="the ledger's signature (the API's key); the SDK obeys "
        "only signed states")
    assignments: list[Assignment] = Field(
        default_factory=list, description="reassignments and delegations, oldest first")

    @property
    def queue(self) -> str:
        """The queue that decides now: the last reassignment's, else the request's."""
        return next((a.to_role for a in reversed(self.assignments) if a.to_role),
                    self.approver_role)

    @property
    def delegates(self) -> list[str]:
        """Approvers (key names) the request was delegated to: they may vote on it."""
        return [a.to_approver for a in self.assignments if a.to_approver]

    @property
    def approvers(self) -> list[str]:
        """Distinct approvers who approved, in the order they did."""
        seen: list[str] = []
        for vote in self.votes:
            if vote.decision == "approve" and vote.approver not in seen:
                seen.append(vote.approver)
        return seen

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES

    def decides(self, *, approval_id: str, tenant: str, agent: str, run_id: str,
                expires_at: datetime | None) -> bool:
        """True if this is a decision (approved or rejected) of exactly that request, made
        before it expired (``resolved_at`` is the ledger's time of the deciding vote)."""
        if not self.final or self.status == EXPIRED:
            return False
        if (self.approval_id, self.tenant, self.agent, self.run_id) != \
                (approval_id, tenant, agent, run_id):
            return False
        return expires_at is None or (self.resolved_at is not None
                                      and self.resolved_at <= expires_at)

    def to_json(self) -> bytes:
        """Without ``assignments`` when there are none: a state never handed on reads
        (and is signed) exactly as before assignments existed."""
        return self.model_dump_json(exclude=None if self.assignments else {"assignments"}
                                    ).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ApprovalState:
        return cls.model_validate_json(raw)
