"""The OpenAI Agents SDK under the ledger: recorded, gated, paused for approvers, resumed.

Install with the extra: ``pip install 'agentledger[openai-agents]'`` (``openai-agents``);
the base SDK never imports this module.

- :class:`AgentsLedger` keeps one ledger run per Agents SDK run: ``await al.run(agent,
  input)`` starts it, and every :meth:`AgentsLedger.resume` of that run after an
  interruption continues the same ledger run, one hash chain.
- Model calls and the calls of tools that are *not* gated are recorded through the SDK's
  run hooks (:class:`LedgerRunHooks`, a ``RunHooks``), passed to ``Runner.run`` for you.
  Hooks rather than a tracing processor: they are called per run, in the run's own task,
  with the usage the model reported (``ModelResponse.usage``), so a model call lands on its
  run's chain in order; a tracing processor is process-wide and sees spans after the fact.
  Model calls are priced from the ledger's price table on the model's name (the agent's
  ``model`` string, a ``Model``'s ``model`` attribute, else ``model_name``).
- :meth:`AgentsLedger.guard_tool` wraps a ``FunctionTool`` so :class:`ToolGuard` decides
  before it runs (control loop, Cedar policy, approvals). The decision is taken in the
  tool's ``needs_approval`` callable, which the SDK asks before it invokes the tool:
  *allow* lets the SDK invoke it (recorded as ``tool.call`` / ``tool.result``); *deny* (the
  policy, an open breaker, safe mode, a budget) answers the model with a tool result naming
  the rule and the reason, and the tool is never invoked; *escalate* asks the approvers
  (``approval.requested``) and answers "needs approval", so the SDK interrupts the run
  (``result.interruptions``) with the approval id beside it (:func:`approval_ids`).
- :meth:`AgentsLedger.resume` waits for the approvers' decision (``ApprovalFollower``: the
  signed approval state, never anything the caller says), then approves or rejects the
  SDK's interruption (``RunState.approve`` / ``RunState.reject`` with the refusal as the
  message the model sees) and runs on from the state: an approved tool executes exactly
  once; a resume before the vote returns the run still paused and asks nobody again.

Exactly once: the wrapper remembers, per run and tool-call id, the approval it asked for
and the decision it took, so the SDK asking ``needs_approval`` again for the same call does
not ask the approvers again, and the tool is opened only with the context ``ToolGuard``
returned for that call. That memory, like ``ToolGuard``'s waiting requests, lives in this
process: a ``RunState`` serialised and resumed by another process asks again.

Delivery: events go through the run's :class:`~agentledger.producers.emitter.Ledger` (at
least once, deduplicated by event id in the sink). A run's hooks and tools run on its event
loop's thread, and each emit is synchronous, so tools the SDK runs concurrently keep one
chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

try:
    from agents import Agent, FunctionTool, Runner
    from agents.run_context import RunContextWrapper
    from agents.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agentledger.producers.adapters.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'agentledger[openai-agents]' (openai-agents)") from exc

from agentledger.producers.adapters.openai_agents_hooks import LedgerRunHooks
from agentledger.producers.adapters.openai_agents_session import (
    CURRENT_SESSION,
    AgentRun,
    AgentSession,
    approval_ids,
    call_id_of,
    refusal_text,
)
from agentledger.producers.adapters.openai_agents_tools import (
    GatedTool,
    IdempotencyKey,
    decide_gated,
    invoke_gated,
)
from agentledger.producers.enforce import ApprovalPending, ToolDenied

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.enforce import ToolGuard

__all__ = ["AgentRun", "AgentSession", "AgentsLedger", "GatedTool", "IdempotencyKey",
           "LedgerRunHooks", "approval_ids", "refusal_text"]


class AgentsLedger:
    """One agent's Agents SDK runs under the ledger: ``al.guard_tool(tool)`` for the tools,
    ``await al.run(agent, input)`` and ``await al.resume(paused)`` to run."""

    def __init__(self, ledger: Ledger, guard: ToolGuard, *, workflow: str,
                 role: str = "agent", provider: str = "openai",
                 model_name: str | None = None,
                 run_kwargs: Mapping[str, Any] | None = None):
        """``workflow`` names the runs; ``role`` is the model calls' role; ``provider`` and
        ``model_name`` price a model whose name the agent does not say (a custom ``Model``);
        ``run_kwargs`` go to every :meth:`Ledger.run` (budget, prompt version,
        ``on_behalf_of``)."""
        self.ledger = ledger
        self.guard = guard
        self.workflow = workflow
        self.role = role
        self.provider = provider
        self.model_name = model_name
        self.run_kwargs = dict(run_kwargs or {})
        self.gated: dict[str, GatedTool] = {}

    # -- runs ---------------------------------------------------------------------------

    async def run(self, agent: Agent[Any], input: Any, **runner_kwargs: Any
                  ) -> AgentRun:
        """``Runner.run(agent, input)`` in a new ledger run (``run.started``). The run
        finishes when the agent ends (``success``) or raises (``failure``, re-raised); a run
        paused on approvals keeps its ledger run open for :meth:`resume`."""
        run = self.ledger.run(self.workflow, inputs=_jsonable(input), **self.run_kwargs)
        run.__enter__()
        return await self._drive(AgentSession(run, agent), agent, input, runner_kwargs)

    async def resume(self, paused: AgentRun, *, wait_s: float = 60.0,
                     **runner_kwargs: Any) -> AgentRun:
        """Wait up to ``wait_s`` for the approvers of every approval ``paused`` waits for,
        tell the SDK each decision (approve, or reject with the refusal the model reads)
        and run on from the state. Nothing decided yet: ``paused`` is returned as it is."""
        session = paused._session
        if not paused.paused:
            return paused
        follower = self.guard.approvals
        deadline = time.monotonic() + wait_s
        if follower is not None:
            for approval_id in paused.approvals.values():
                def decided(approval_id: str = approval_id) -> bool:
                    state = follower.get(approval_id)
                    return state is not None and state.final

                budget = max(0.0, deadline - time.monotonic())
                if not decided() and budget > 0:
                    await asyncio.to_thread(follower.wait_for, decided, budget)
        state = paused.result.to_state()
        told = 0
        for item in paused.result.interruptions:
            call_id = call_id_of(item)
            asked_id = session.asked.get(call_id) if call_id else None
            if call_id is None or asked_id is None:
                continue  # someone else's approval (needs_approval=True on an ungated tool)
            try:
                session.ready[call_id] = self.guard.resume(session.run, asked_id)
            except ApprovalPending:
                continue  # undecided: the SDK is asked again, and it pauses again
            except ToolDenied as refused:
                gated = self.gated.get(item.tool_name or "")
                text = refusal_text(gated.catalog_tool if gated else item.tool_name or "",
                                    gated.catalog_action if gated else "", refused)
                state.reject(item, rejection_message=text)
            except KeyError:
                state.reject(item, rejection_message=refusal_text(
                    item.tool_name or "", "", ToolDenied(
                        "approval_lost", f"approval {asked_id} is not waiting in this "
                        "process (restarted?): call the tool again to ask anew")))
            else:
                state.approve(item)
            del session.asked[call_id]
            told += 1
        if not told:
            return paused
        return await self._drive(session, session.agent, state, runner_kwargs)

    def run_sync(self, agent: Agent[Any], input: Any, **runner_kwargs: Any
                 ) -> AgentRun:
        """:meth:`run` from synchronous code (its own event loop)."""
        return asyncio.run(self.run(agent, input, **runner_kwargs))

    def resume_sync(self, paused: AgentRun, *, wait_s: float = 60.0,
                    **runner_kwargs: Any) -> AgentRun:
        """:meth:`resume` from synchronous code (its own event loop)."""
        return asyncio.run(self.resume(paused, wait_s=wait_s, **runner_kwargs))

    @contextlib.contextmanager
    def bind(self, run: RunContext, agent: Agent[Any] | None = None) -> Iterator[None]:
        """Gated tools invoked in this block (your own tests of a tool, a bench) record and
        decide on ``run``, as inside :meth:`run`; the run is not started or finished here."""
        token = CURRENT_SESSION.set(AgentSession(run, agent or Agent(name="bound")))
        try:
            yield
        finally:
            CURRENT_SESSION.reset(token)

    async def _drive(self, session: AgentSession, agent: Agent[Any], start: Any,
                     runner_kwargs: dict[str, Any]) -> AgentRun:
        hooks = LedgerRunHooks(self, session, runner_kwargs.pop("hooks", None))
        token = CURRENT_SESSION.set(session)
        try:
            result = await Runner.run(agent, start, hooks=hooks, **runner_kwargs)
        except BaseException as exc:
            self.finish(session, "failure", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            CURRENT_SESSION.reset(token)
        approvals = {}
        for item in result.interruptions:
            call_id = call_id_of(item)
            if call_id is not None and call_id in session.asked:
                approvals[call_id] = session.asked[call_id]
        if not result.interruptions:
            self.finish(session)
        return AgentRun(result, session.run, approvals, session)

    @staticmethod
    def finish(session: AgentSession, outcome: str = "success", error: str | None = None
               ) -> None:
        """Finish the run (``run.finished``) unless the guard did (an aborted approval)."""
        run = session.run
        if not run.finished:
            run.finish(outcome, error=error)
        run.__exit__(None, None, None)

    # -- tools --------------------------------------------------------------------------

    def guard_tool(self, tool: FunctionTool, *, tool_name: str | None = None,
                   action: str | None = None, mode: str = "write",
                   idempotency_key: IdempotencyKey | None = None) -> FunctionTool:
        """``tool``, gated: the catalog's ``tool_name:action`` (default: the tool's name for
        both) is decided by the guard before every call. ``mode`` is what you declare; the
        catalog's mode wins. ``idempotency_key`` makes the call's key from its arguments
        (default: the SDK's tool-call id). The model sees the same name, description and
        schema; the tool must not set ``needs_approval`` itself (the guard decides)."""
        gated = GatedTool(tool, tool_name or tool.name, action or tool.name, mode,
                       idempotency_key)
        self.gated[tool.name] = gated

        async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any],
                                 call_id: str) -> bool:
            return decide_gated(self.guard, gated, params, call_id)

        async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
            return await invoke_gated(self.guard, gated, ctx, arguments)

        return dataclasses.replace(tool, needs_approval=needs_approval,
                                   on_invoke_tool=invoke)


def _jsonable(value: Any) -> Any:
    """The run's input as the ledger hashes it (``inputs_hash``): JSON-able, else its text."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
