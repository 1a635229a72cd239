"""What an enforced tool call raises instead of going ahead (see
:mod:`agentledger.producers.enforce`): refused, expired, or still waiting for approvers.
The framework adapters turn these into answers the model can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentledger.producers.gate import Decision

__all__ = ["ApprovalExpired", "ApprovalPending", "ToolDenied", "refusal_text"]


class ToolDenied(RuntimeError):
    """The call was refused before it was made; ``rule`` and ``reason`` say by what."""

    def __init__(self, rule: str, reason: str, decision: Decision | None = None):
        super().__init__(f"{rule}: {reason}" if reason else rule)
        self.rule = rule
        self.reason = reason
        self.decision = decision


class ApprovalExpired(ToolDenied):
    """Nobody decided in time; ``outcome`` is what the queue's policy made of the run."""

    def __init__(self, approval_id: str, outcome: str):
        super().__init__("approval_expired", f"approval {approval_id} expired")
        self.approval_id = approval_id
        self.outcome = outcome


class ApprovalPending(RuntimeError):
    """Still waiting for approvers; resume with ``guard.resume(run, approval_id)``."""

    def __init__(self, approval_id: str, state: str):
        super().__init__(f"approval {approval_id} still {state}")
        self.approval_id = approval_id


def refusal_text(tool: str, action: str, refused: ToolDenied) -> str:
    """What a model reads instead of the tool's result: the rule, the reason and what to
    do, so it can tell the user or choose another action (never an exception)."""
    reason = refused.reason or refused.rule
    if isinstance(refused, ApprovalExpired) and refused.outcome == "aborted":
        advice = "The run was aborted: stop and tell the user."
    else:
        advice = "Do not retry the same call; tell the user or choose another action."
    return (f"Refused by agentledger before {tool}:{action} ran. rule: {refused.rule}. "
            f"reason: {reason}. {advice}")
