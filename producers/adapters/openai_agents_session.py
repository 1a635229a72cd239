"""The ledger's side of one OpenAI Agents SDK run, and what a run hands back (see
:mod:`.openai_agents`).

The session is the process-local memory that makes gated calls exactly once: per run and
tool-call id, the approval asked for and the decision taken. A ``RunState`` serialised and
resumed by another process has no session here and asks again.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents import Agent, ToolApprovalItem
from agents.result import RunResult

from agentledger.producers.refusals import ToolDenied, refusal_text

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext

__all__ = ["CURRENT_SESSION", "AgentRun", "AgentSession", "approval_ids", "call_id_of",
           "refusal_text"]


@dataclass
class AgentSession:
    """The ledger's side of one Agents SDK run (across its interruptions)."""

    run: RunContext
    agent: Agent[Any]
    """The agent the run started with (``Runner.run(agent, state)`` resumes from it)."""
    asked: dict[str, str] = field(default_factory=dict)
    """tool-call id → the approval id asked for it, until the SDK is told the decision."""
    ready: dict[str, ToolCallContext] = field(default_factory=dict)
    """tool-call id → the allowed call's context, opened when the SDK invokes the tool."""
    refused: dict[str, ToolDenied] = field(default_factory=dict)
    """tool-call id → the refusal the model gets instead of the tool's result."""
    open_tools: dict[str, ToolCallContext] = field(default_factory=dict)
    """tool-call id → ungated tool calls recorded by the hooks, until they end."""
    models: dict[str, float] = field(default_factory=dict)


CURRENT_SESSION: contextvars.ContextVar[AgentSession | None] = contextvars.ContextVar(
    "agentledger_openai_agents_session", default=None)
"""The session of the run whose task this is (gated tools find their run through it)."""


@dataclass
class AgentRun:
    """One Agents SDK run under the ledger: the SDK's result and the ledger run."""

    result: RunResult
    run: RunContext
    approvals: dict[str, str]
    """tool-call id → approval id, for the interruptions this run is paused on."""
    _session: AgentSession = field(repr=False)

    @property
    def paused(self) -> bool:
        """True while the run waits for approvers (``result.interruptions``)."""
        return bool(self.result.interruptions)

    @property
    def approval_ids(self) -> list[str]:
        return list(self.approvals.values())

    @property
    def final_output(self) -> Any:
        return self.result.final_output


def approval_ids(paused: AgentRun) -> list[str]:
    """The approval ids a paused run waits for; empty if it did not pause for approvers."""
    return paused.approval_ids


def call_id_of(item: ToolApprovalItem) -> str | None:
    """The tool-call id of an SDK interruption (``ToolApprovalItem``), if it names one."""
    call_id = getattr(item.raw_item, "call_id", None)
    if call_id is None and isinstance(item.raw_item, Mapping):
        call_id = item.raw_item.get("call_id")
    return call_id if isinstance(call_id, str) else None

