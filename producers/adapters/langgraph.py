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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import LLMResult
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool
    from langgraph.errors import GraphBubbleUp
    from langgraph.types import Command, interrupt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agentledger.producers.adapters.langgraph needs LangGraph: "
        "pip install 'agentledger[langgraph]' (langgraph, langchain-core)") from exc

from agentledger.producers.enforce import ApprovalExpired, ApprovalPending, ToolDenied

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.enforce import ToolGuard

__all__ = ["GuardedTool", "LangGraphLedger", "LedgerCallbackHandler", "ScriptedChatModel",
           "approval_ids"]

IdempotencyKey = Callable[[Mapping[str, Any]], str | None]


@dataclass
class _Thread:
    """The ledger's side of one LangGraph thread: its run and what its tools did."""

    run: RunContext
    lock: threading.RLock = field(default_factory=threading.RLock)
    asked: dict[str, str] = field(default_factory=dict)
    """tool-call id → the approval id asked for it (survives the node's re-execution)."""
    done: dict[str, Any] = field(default_factory=dict)
    """tool-call id → what the tool returned (a re-executed node does not run it again)."""
    open_tools: dict[UUID, ToolCallContext] = field(default_factory=dict)
    models: dict[UUID, tuple[float, str, str]] = field(default_factory=dict)


def approval_ids(result: Mapping[str, Any]) -> list[str]:
    """The approval ids a paused graph's result (``graph.invoke``'s ``__interrupt__``)
    waits for; empty if the graph did not pause for approvers."""
    found = []
    for pending in result.get("__interrupt__", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, Mapping) and isinstance(value.get("approval_id"), str):
            found.append(value["approval_id"])
    return found


def _paused(snapshot: Any) -> list[Any]:
    """The interrupts of a graph's state that wait for approvers (they name an approval)."""
    return [i for i in snapshot.interrupts
            if isinstance(i.value, Mapping) and "approval_id" in i.value]


def _answer(paused: list[Any]) -> Command[Any]:
    """The resume: each paused interrupt gets the approval id it names (the decision
    itself is read from the signed approval state, never from here)."""
    if not paused:
        raise ValueError("the thread is not paused on an approval: nothing to resume")
    return Command(resume={i.id: {"approval_id": i.value["approval_id"]} for i in paused})


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
        self.threads: dict[str, _Thread] = {}
        self.guarded: set[str] = set()
        self._lock = threading.Lock()

    # -- runs ---------------------------------------------------------------------------

    def thread(self, thread_id: str) -> _Thread:
        """The thread's state, its ledger run started (``run.started``) on first use."""
        with self._lock:
            found = self.threads.get(thread_id)
            if found is None:
                run = self.ledger.run(self.workflow, **self.run_kwargs)
                run.__enter__()
                found = self.threads[thread_id] = _Thread(run)
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
            paused = _paused(graph.get_state(config))
            self._wait(paused, deadline - time.monotonic())
            result = self.invoke(graph, _answer(paused), thread_id, **configurable)
            if not self._again(result, asked, deadline):
                return result

    async def aresume(self, graph: Any, thread_id: str, *, wait_s: float = 60.0,
                      **configurable: Any) -> dict[str, Any]:
        """:meth:`resume` for graphs run with ``graph.ainvoke`` (the wait is on a thread)."""
        deadline = time.monotonic() + wait_s
        config = self.config(thread_id, **configurable)
        asked = set(self.thread(thread_id).asked.values())
        while True:
            paused = _paused(await graph.aget_state(config))
            await asyncio.to_thread(self._wait, paused, deadline - time.monotonic())
            result = await self.ainvoke(graph, _answer(paused), thread_id, **configurable)
            if not self._again(result, asked, deadline):
                return result

    def _again(self, result: dict[str, Any], asked: set[str], deadline: float) -> bool:
        """Whether to resume again: the graph paused next on requests that were already
        asked when the resume began, and they are decided or there is time to wait."""
        follower = self.guard.approvals
        now = approval_ids(result)
        if not now or follower is None or not set(now) <= asked:
            return False
        return time.monotonic() < deadline or all(
            (state := follower.get(a)) is not None and state.final for a in now)

    def _wait(self, paused: list[Any], wait_s: float) -> None:
        """Wait (up to ``wait_s`` in all) until every paused approval is decided."""
        follower = self.guard.approvals
        if follower is None:
            return
        deadline = time.monotonic() + max(0.0, wait_s)
        for pending in paused:
            approval_id = pending.value["approval_id"]

            def decided(approval_id: str = approval_id) -> bool:
                state = follower.get(approval_id)
                return state is not None and state.final

            follower.wait_for(decided, max(0.0, deadline - time.monotonic()))

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
        self.guarded.add(tool.name)
        return GuardedTool(name=tool.name, description=tool.description,
                           args_schema=tool.args_schema, inner=tool, adapter=self,
                           catalog_tool=tool_name or tool.name,
                           catalog_action=action or tool.name, declared_mode=mode,
                           key_of=idempotency_key)

    def begin(self, tool: GuardedTool, tool_input: Any, config: RunnableConfig | None
              ) -> tuple[_Thread, str | None, ToolCallContext | None, Any]:
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
        call_id, args = _split(tool_input)
        if call_id is not None and call_id in state.done:
            return state, call_id, None, state.done[call_id]  # the tool ran already
        try:
            call = self._decide(state, tool, args, call_id)
        except ToolDenied as refused:
            return state, call_id, None, self._refusal(tool, call_id, refused)
        with state.lock:
            call.__enter__()
        return state, call_id, call, None

    @staticmethod
    def end(state: _Thread, call_id: str | None, call: ToolCallContext, out: Any,
            error: BaseException | None = None) -> None:
        """Record the tool's result (``tool.result``) and remember it for re-executions."""
        with state.lock:
            if error is None:
                call.__exit__(None, None, None)
            else:
                call.__exit__(type(error), error, error.__traceback__)
        if call_id is not None and error is None:
            state.done[call_id] = out

    def _decide(self, state: _Thread, tool: GuardedTool, args: dict[str, Any],
                call_id: str | None) -> ToolCallContext:
        run = state.run
        if run.finished:
            raise ToolDenied("run_finished", f"run {run.run_id} is {run.outcome}: "
                                             "no more tool calls")
        approval_id = state.asked.get(call_id) if call_id is not None else None
        if approval_id is None:
            key = tool.key_of(args) if tool.key_of is not None else call_id
            try:
                with state.lock:
                    return self.guard.call(run, tool.catalog_tool, tool.catalog_action,
                                           mode=tool.declared_mode, args=args,
                                           idempotency_key=key)
            except ApprovalPending as pending:
                approval_id = pending.approval_id
                if call_id is not None:
                    state.asked[call_id] = approval_id
        return self._await(state, tool, approval_id, call_id)

    def _await(self, state: _Thread, tool: GuardedTool, approval_id: str,
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

    def _refusal(self, tool: GuardedTool, call_id: str | None, refused: ToolDenied
                 ) -> ToolMessage | str:
        reason = refused.reason or refused.rule
        if isinstance(refused, ApprovalExpired) and refused.outcome == "aborted":
            advice = "The run was aborted: stop and tell the user."
        else:
            advice = "Do not retry the same call; tell the user or choose another action."
        text = (f"Refused by agentledger before {tool.catalog_tool}:{tool.catalog_action} "
                f"ran. rule: {refused.rule}. reason: {reason}. {advice}")
        if call_id is None:
            return text
        return ToolMessage(content=text, tool_call_id=call_id, name=tool.name,
                           status="error",
                           artifact={"refused": True, "rule": refused.rule,
                                     "reason": refused.reason})


def _split(tool_input: Any) -> tuple[str | None, dict[str, Any]]:
    """(tool-call id, args) of what ``ToolNode`` passes: a ``ToolCall`` or plain args."""
    if isinstance(tool_input, Mapping) and tool_input.get("type") == "tool_call":
        call_id = tool_input.get("id")
        return (call_id if isinstance(call_id, str) else None), dict(tool_input["args"])
    if isinstance(tool_input, Mapping):
        return None, dict(tool_input)
    return None, {"input": tool_input}


class GuardedTool(BaseTool):
    """A LangChain tool behind the ledger's gate (made by :meth:`LangGraphLedger.guard_tool`).
    Same name, description and argument schema as the tool it wraps, so the model sees no
    difference; the wrapped tool runs (with its own callbacks) only when the gate allows."""

    inner: BaseTool
    adapter: Any
    catalog_tool: str
    catalog_action: str
    declared_mode: str = "write"
    key_of: Any = None

    def _run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - invoke is used
        raise NotImplementedError("GuardedTool runs through invoke/ainvoke")

    def invoke(self, input: Any, config: RunnableConfig | None = None,
               **kwargs: Any) -> Any:
        adapter: LangGraphLedger = self.adapter
        state, call_id, call, answer = adapter.begin(self, input, config)
        if call is None:
            return answer
        try:
            out = self.inner.invoke(input, config, **kwargs)
        except BaseException as exc:
            adapter.end(state, call_id, call, None, exc)
            raise
        adapter.end(state, call_id, call, out)
        return out

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        # the decision is made in line: it is in memory, and its events are queued to
        # Kafka, so nothing here waits on the network
        adapter: LangGraphLedger = self.adapter
        state, call_id, call, answer = adapter.begin(self, input, config)
        if call is None:
            return answer
        try:
            out = await self.inner.ainvoke(input, config, **kwargs)
        except BaseException as exc:
            adapter.end(state, call_id, call, None, exc)
            raise
        adapter.end(state, call_id, call, out)
        return out


class LedgerCallbackHandler(BaseCallbackHandler):
    """Records one LangGraph thread's model calls and ungated tool calls on its run.

    Model calls are priced by the ledger's price table from the usage the model reports
    (``usage_metadata``, else ``llm_output["token_usage"]``); provider and model come
    from the message's ``response_metadata`` (``model_provider``, ``model_name``), else
    from LangChain's ``ls_provider`` / ``ls_model_name``. Gated tools are recorded by
    :class:`GuardedTool` (with the decision), so the handler skips them.
    """

    raise_error = False

    def __init__(self, adapter: LangGraphLedger, thread_id: str):
        self.adapter = adapter
        self.thread_id = thread_id

    def _state(self) -> _Thread | None:
        found = self.adapter.threads.get(self.thread_id)
        return found if found is not None and not found.run.finished else None

    # -- the graph ------------------------------------------------------------------------

    def on_chain_error(self, error: BaseException, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is None and not isinstance(error, GraphBubbleUp):
            self.adapter.finish(self.thread_id, "failure", f"{type(error).__name__}: {error}")

    # -- models ---------------------------------------------------------------------------

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        state = self._state()
        if state is not None:
            meta = metadata or {}
            state.models[run_id] = (time.perf_counter(), str(meta.get("ls_provider") or ""),
                                    str(meta.get("ls_model_name") or ""))

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.on_chat_model_start(serialized, [], run_id=run_id, metadata=metadata)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID,
                   parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        state = self._state()
        started = state.models.pop(run_id, None) if state is not None else None
        if state is None or started is None:
            return
        t0, provider, model = started
        tokens_in = tokens_out = cached = 0
        meta: Mapping[str, Any] = {}
        message = _first_message(response)
        if message is not None:
            meta = message.response_metadata or {}
            usage = message.usage_metadata
            if usage:
                tokens_in, tokens_out = usage["input_tokens"], usage["output_tokens"]
                cached = int((usage.get("input_token_details") or {}).get("cache_read") or 0)
        if not tokens_in and not tokens_out:
            token_usage = (response.llm_output or {}).get("token_usage") or {}
            tokens_in = int(token_usage.get("prompt_tokens") or 0)
            tokens_out = int(token_usage.get("completion_tokens") or 0)
        model = str(meta.get("model_name") or (response.llm_output or {}).get("model_name")
                    or model or "unknown")
        provider = str(meta.get("model_provider") or provider or "unknown")
        with state.lock:
            state.run.model_call(provider=provider, model=model,
                                 model_version=str(meta.get("system_fingerprint") or model),
                                 role=self.adapter.role, tokens_in=tokens_in,
                                 tokens_out=tokens_out, cached_tokens=cached,
                                 latency_ms=round((time.perf_counter() - t0) * 1000, 3))

    def on_llm_error(self, error: BaseException, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        state = self._state()
        started = state.models.pop(run_id, None) if state is not None else None
        if state is None or started is None:
            return
        t0, provider, model = started
        with state.lock:
            state.run.model_call(provider=provider or "unknown", model=model or "unknown",
                                 model_version=model or "unknown", role=self.adapter.role,
                                 tokens_in=0, tokens_out=0, status="error",
                                 latency_ms=round((time.perf_counter() - t0) * 1000, 3))

    # -- ungated tools --------------------------------------------------------------------

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None,
                      inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = str(kwargs.get("name") or serialized.get("name") or "tool")
        state = self._state()
        if state is None or name in self.adapter.guarded:
            return
        mode = self.adapter.guard.mode_of(name, name, "read")
        with state.lock:
            call = state.run.tool_call(name, name, mode=mode,
                                       args=inputs if inputs is not None else
                                       {"input": input_str})
            call.__enter__()
        state.open_tools[run_id] = call

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                    **kwargs: Any) -> None:
        self._close_tool(run_id, None)

    def on_tool_error(self, error: BaseException, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._close_tool(run_id, error)

    def _close_tool(self, run_id: UUID, error: BaseException | None) -> None:
        found = self.adapter.threads.get(self.thread_id)
        call = found.open_tools.pop(run_id, None) if found is not None else None
        if found is None or call is None:
            return
        with found.lock:
            if error is None:
                call.__exit__(None, None, None)
            else:
                call.__exit__(type(error), error, error.__traceback__)


def _first_message(response: LLMResult) -> AIMessage | None:
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, AIMessage):
                return message
    return None


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that answers from a script (offline examples, tests, benches): each
    call returns the next message. ``bind_tools`` returns the model itself, so graphs
    written for a real model (``model.bind_tools(tools)``) run unchanged."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self

    @staticmethod
    def says(content: str = "", *, tool_calls: Sequence[Mapping[str, Any]] = (),
             model: str = "gpt-4o-mini", provider: str = "openai", tokens_in: int = 120,
             tokens_out: int = 30) -> AIMessage:
        """A scripted answer with the usage and model a provider would report."""
        return AIMessage(content=content, tool_calls=[dict(c) for c in tool_calls],
                         usage_metadata={"input_tokens": tokens_in,
                                         "output_tokens": tokens_out,
                                         "total_tokens": tokens_in + tokens_out},
                         response_metadata={"model_name": model, "model_provider": provider})
