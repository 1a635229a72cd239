"""LangGraph / LangChain under the ledger: recorded, gated, paused for approvers, resumed.

Install with the extra: ``pip install 'agentledger[langgraph]'`` (``langgraph``,
``langchain-core``); the base SDK never imports this module.

- :class:`LangGraphLedger` keeps one ledger run per LangGraph thread (``thread_id``): a
  graph that pauses and resumes any number of times is one run, one hash chain.
- :class:`LedgerCallbackHandler` (LangChain's callback interface) records the model calls,
  priced from the ledger's price table on the token usage the model reports, and the
  calls of tools that are *not* gated (recorded, not enforced); a graph that fails
  finishes its run ``failure``.
- :meth:`LangGraphLedger.guard_tool` wraps a LangChain tool so :class:`ToolGuard` decides
  before it runs (control loop, Cedar policy, approvals). A refusal (policy, breaker,
  safe mode, budget, a rejected or expired approval) is returned to the model as an error
  ``ToolMessage`` naming the rule and the reason: something it can act on, never a crash.
- An escalation is a LangGraph ``interrupt()`` whose value carries the approval id. The
  graph resumes from its checkpointer with ``Command(resume={"approval_id": ...})``;
  :meth:`LangGraphLedger.resume` waits for the approvers (``ApprovalFollower``) and does it.

Exactly once, although LangGraph re-executes a node from its start on resume: the
wrapper remembers, per thread and tool-call id, the approval it asked for, so the
re-executed call does not ask again but answers the ``interrupt()`` and picks the same
request up with ``ToolGuard.resume``; a call whose tool already ran returns its result
again without running it. The resume value only names which request is resumed: the
decision itself is taken from the signed approval state the follower holds (a forged
``Command(resume=...)`` approves nothing). That memory, like ``ToolGuard``'s waiting
requests, lives in this process: a graph resumed by another process asks again.

Delivery: events go through the run's :class:`~agentledger.producers.emitter.Ledger`
(at least once, deduplicated by event id in the sink); emits of one run are serialised
by a lock, so tools a ``ToolNode`` runs in parallel keep one chain.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

try:
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool
    from langgraph.errors import GraphBubbleUp
    from langgraph.types import interrupt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agentledger.producers.adapters.langgraph needs LangGraph: "
        "pip install 'agentledger[langgraph]' (langgraph, langchain-core)") from exc

from agentledger.producers.adapters.langgraph_model import ScriptedChatModel
from agentledger.producers.adapters.langgraph_recording import (
    LedgerCallbackHandler,
    ThreadState,
)
from agentledger.producers.adapters.langgraph_resume import (
    approval_ids,
    paused_on_approvals,
    resume_again,
    resume_command,
    wait_for_decisions,
)
from agentledger.producers.adapters.langgraph_tools import (
    GuardedTool,
    refusal_message,
    split_tool_input,
)
from agentledger.producers.enforce import ApprovalPending, ToolDenied

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.enforce import ToolGuard

__all__ = ["GuardedTool", "LangGraphLedger", "LedgerCallbackHandler", "ScriptedChatModel",
           "ThreadState", "approval_ids"]

IdempotencyKey = Callable[[Mapping[str, Any]], str | None]


class LangGraphLedger:
    """One agent's graphs under the ledger: ``lg.guard_tool(...)`` for the tools,
    ``lg.invoke(graph, input, thread_id)`` and ``lg.resume(graph, thread_id)`` to run."""

    def __init__(self, ledger: Ledger, guard: ToolGuard, *, workflow: str,
                 role: str = "agent", run_kwargs: Mapping[str, Any] | None = None):
        """``workflow`` names the runs; ``role`` is the model calls' role; ``run_kwargs``
        go to every :meth:`Ledger.run` (budget, prompt version, ``on_behalf_of``)."""
        self.ledger = ledger
        self.guard = guard
        self.workflow = workflow
        self.role = role
        self.run_kwargs = dict(run_kwargs or {})
        self.threads: dict[str, ThreadState] = {}
        self.guarded: dict[str, GuardedTool] = {}
        """tool name → its gated wrapper (the callback handler records the others)"""
        self._lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    def thread(self, thread_id: str) -> ThreadState:
        """The thread's state, its ledger run started (``run.started``) on first use."""
        with self._lock:
            found = self.threads.get(thread_id)
            if found is None:
                run = self.ledger.run(self.workflow, **self.run_kwargs)
                run.__enter__()
                found = self.threads[thread_id] = ThreadState(run)
            return found

    def run(self, thread_id: str) -> RunContext:
        """The ledger run of ``thread_id`` (started if it was not)."""
        return self.thread(thread_id).run

    def finish(self, thread_id: str, outcome: str = "success", error: str | None = None
               ) -> None:
        """Finish the thread's run (``run.finished``) and forget the thread; idempotent."""
        with self._lock:
            found = self.threads.pop(thread_id, None)
        if found is None:
            return
        with found.lock:
            if not found.run.finished:
                found.run.finish(outcome, error=error)
            found.run.__exit__(None, None, None)

    def config(self, thread_id: str, **configurable: Any) -> RunnableConfig:
        """The config to run a graph with: the thread and this ledger's callback handler."""
        self.thread(thread_id)
        return {"configurable": {"thread_id": thread_id, **configurable},
                "callbacks": [LedgerCallbackHandler(self, thread_id)]}

    def invoke(self, graph: Any, graph_input: Any, thread_id: str, **configurable: Any
               ) -> dict[str, Any]:
        """``graph.invoke`` under the ledger. The run finishes when the graph ends
        (``success``) or raises (``failure``, re-raised); a graph paused on an approval
        (see :func:`approval_ids`) keeps its run open for :meth:`resume`."""
        try:
            result: dict[str, Any] = graph.invoke(graph_input,
                                                  self.config(thread_id, **configurable))
        except BaseException as exc:
            self._failed(thread_id, exc)
            raise
        return self._ended(thread_id, result)

    async def ainvoke(self, graph: Any, graph_input: Any, thread_id: str,
                      **configurable: Any) -> dict[str, Any]:
        """:meth:`invoke` for graphs run with ``graph.ainvoke`` (async nodes and tools)."""
        try:
            result: dict[str, Any] = await graph.ainvoke(
                graph_input, self.config(thread_id, **configurable))
        except BaseException as exc:
            self._failed(thread_id, exc)
            raise
        return self._ended(thread_id, result)

    def resume(self, graph: Any, thread_id: str, *, wait_s: float = 60.0,
               **configurable: Any) -> dict[str, Any]:
        """Wait up to ``wait_s`` for the approvers of every approval the thread is paused
        on, then resume it from its checkpointer (``Command(resume=...)`` naming each
        approval id). Still undecided, the graph pauses again on the same request. Tool
        calls escalated in parallel are asked at once but surface one interrupt at a
        time: while the graph pauses next on one of those, it is waited for and resumed
        again (within ``wait_s``); a request made after this resume began is returned."""
        deadline = time.monotonic() + wait_s
        config = self.config(thread_id, **configurable)
        asked = set(self.thread(thread_id).asked.values())
        while True:
            paused = paused_on_approvals(graph.get_state(config))
            wait_for_decisions(self.guard.approvals, paused, deadline - time.monotonic())
            result = self.invoke(graph, resume_command(paused), thread_id, **configurable)
            if not resume_again(self.guard.approvals, result, asked, deadline):
                return result

    async def aresume(self, graph: Any, thread_id: str, *, wait_s: float = 60.0,
                      **configurable: Any) -> dict[str, Any]:
        """:meth:`resume` for graphs run with ``graph.ainvoke`` (the wait is on a thread)."""
        deadline = time.monotonic() + wait_s
        config = self.config(thread_id, **configurable)
        asked = set(self.thread(thread_id).asked.values())
        while True:
            paused = paused_on_approvals(await graph.aget_state(config))
            await asyncio.to_thread(wait_for_decisions, self.guard.approvals, paused,
                                    deadline - time.monotonic())
            result = await self.ainvoke(graph, resume_command(paused), thread_id,
                                        **configurable)
            if not resume_again(self.guard.approvals, result, asked, deadline):
                return result

    def _failed(self, thread_id: str, exc: BaseException) -> None:
        if not isinstance(exc, GraphBubbleUp):
            self.finish(thread_id, "failure", f"{type(exc).__name__}: {exc}")

    def _ended(self, thread_id: str, result: dict[str, Any]) -> dict[str, Any]:
        if not result.get("__interrupt__"):
            self.finish(thread_id)
        return result

    # -- tools --------------------------------------------------------------------------

    def guard_tool(self, tool: BaseTool, *, tool_name: str | None = None,
                   action: str | None = None, mode: str = "write",
                   idempotency_key: IdempotencyKey | None = None) -> GuardedTool:
        """``tool``, gated: the catalog's ``tool_name:action`` (default: the tool's name
        for both) is decided by the guard before every call. ``mode`` is what you declare;
        the catalog's mode wins. ``idempotency_key`` makes the call's key from its args
        (default: the tool-call id, stable across LangGraph's re-executions)."""
        guarded = self.guarded[tool.name] = GuardedTool(
            name=tool.name, description=tool.description, args_schema=tool.args_schema,
            inner=tool, adapter=self, catalog_tool=tool_name or tool.name,
            catalog_action=action or tool.name, declared_mode=mode, key_of=idempotency_key)
        return guarded

    def begin(self, tool: GuardedTool, tool_input: Any, config: RunnableConfig | None
              ) -> tuple[ThreadState, str | None, ToolCallContext | None, Any]:
        """Decide one call (maybe pausing the graph for approvers): ``(thread, call id,
        the open tool-call context, None)`` to run it, or ``(..., None, answer)`` with the
        answer to give without running it: a refusal (the error ``ToolMessage`` the model
        sees) or, on a re-executed node, what the tool returned the first time."""
        configurable = (config or {}).get("configurable") or {}
        thread_id = configurable.get("thread_id")
        if not isinstance(thread_id, str):
            raise ValueError("a gated tool runs in a LangGraph thread: invoke the graph "
                             "with LangGraphLedger.config(thread_id)")
        state = self.thread(thread_id)
        call_id, args = split_tool_input(tool_input)
        if call_id is not None and call_id in state.done:
            return state, call_id, None, state.done[call_id]  # the tool ran already
        try:
            call = self._decide(state, tool, args, call_id)
        except ToolDenied as refused:
            return state, call_id, None, refusal_message(tool, call_id, refused)
        with state.lock:
            call.__enter__()
        return state, call_id, call, None

    @staticmethod
    def end(state: ThreadState, call_id: str | None, call: ToolCallContext, out: Any,
            error: BaseException | None = None) -> None:
        """Record the tool's result (``tool.result``) and remember it for re-executions."""
        with state.lock:
            if error is None:
                call.__exit__(None, None, None)
            else:
                call.__exit__(type(error), error, error.__traceback__)
        if call_id is not None and error is None:
            state.done[call_id] = out

    def _decide(self, state: ThreadState, tool: GuardedTool, args: dict[str, Any],
                call_id: str | None) -> ToolCallContext:
        run = state.run
        if run.finished:
            raise ToolDenied("run_finished", f"run {run.run_id} is {run.outcome}: "
                                             "no more tool calls")
        # under the thread's lock: a sibling may be asking for this very call (_ask_with)
        with state.lock:
            state.proposed.pop(call_id or "", None)  # reached: never asked for by a sibling
            ready = state.ready.pop(call_id, None) if call_id is not None else None
            if isinstance(ready, BaseException):
                raise ready
            if ready is not None:
                return ready
            approval_id = state.asked.get(call_id) if call_id is not None else None
            if approval_id is None:
                key = tool.key_of(args) if tool.key_of is not None else call_id
                try:
                    return self.guard.call(run, tool.catalog_tool, tool.catalog_action,
                                           mode=tool.declared_mode, args=args,
                                           idempotency_key=key)
                except ApprovalPending as pending:
                    approval_id = pending.approval_id
                    if call_id is not None:
                        state.asked[call_id] = approval_id
                    self._ask_with(state)
        return self._await(state, tool, approval_id, call_id)

    def _ask_with(self, state: ThreadState) -> None:
        """Ask now for the turn's other gated calls that need approvers, so the approvers
        see the whole turn at once: a ``ToolNode`` whose first call pauses the graph may
        never start the others (the executor cancels calls not yet begun), and each would
        otherwise be asked only after the one before it was decided. A sibling refused on
        the way is answered with its refusal when the node reaches it. The caller holds the
        thread's lock."""
        for other_id, (name, args) in list(state.proposed.items()):
            tool = self.guarded.get(name)
            if tool is None or other_id in state.asked or other_id in state.ready:
                continue  # (calls the node reached left ``proposed``: see _decide)
            key = tool.key_of(args) if tool.key_of is not None else other_id
            decision = self.guard.decide(state.run, tool.catalog_tool,
                                         tool.catalog_action, args, key)
            if decision.decision != "escalate":
                continue
            try:
                state.ready[other_id] = self.guard.call(
                    state.run, tool.catalog_tool, tool.catalog_action,
                    mode=tool.declared_mode, args=args, idempotency_key=key)
            except ApprovalPending as pending:
                state.asked[other_id] = pending.approval_id
            except ToolDenied as refused:
                state.ready[other_id] = refused

    def _await(self, state: ThreadState, tool: GuardedTool, approval_id: str,
               call_id: str | None) -> ToolCallContext:
        """Pause the graph on ``approval_id`` until it is resumed after the decision."""
        waiting = self.guard.waiting.get(approval_id)
        ask = {"approval_id": approval_id, "tool": tool.catalog_tool,
               "action": tool.catalog_action, "tool_call_id": call_id,
               "queue": waiting.decision.approver_role if waiting else None,
               "approvals_required": waiting.decision.approvals_required if waiting else None,
               "reason": waiting.decision.reason if waiting else None}
        while True:
            answer: Any = interrupt(ask)  # raises to pause; on resume, returns the resume value
            if not isinstance(answer, Mapping) or answer.get("approval_id") != approval_id:
                continue  # a resume for another request: pause again on this one
            try:
                with state.lock:
                    call = self.guard.resume(state.run, approval_id)
            except ApprovalPending:
                continue  # resumed before the vote: pause again
            except KeyError:
                if call_id is not None:
                    state.asked.pop(call_id, None)
                raise ToolDenied("approval_lost", f"approval {approval_id} is not waiting "
                                 "in this process (restarted?): call the tool again to "
                                 "ask anew") from None
            except ToolDenied:
                if call_id is not None:
                    state.asked.pop(call_id, None)
                raise
            if call_id is not None:
                state.asked.pop(call_id, None)
            return call
