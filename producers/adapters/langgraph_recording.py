"""What the ledger records of a LangGraph thread: its run state, and the callback handler
that records model calls and ungated tool calls on it (see :mod:`.langgraph`).

Delivery: events go through the run's :class:`~agentledger.producers.emitter.Ledger` (at
least once, deduplicated by event id in the sink); emits of one run are serialised by the
thread's lock, so tools a ``ToolNode`` runs in parallel keep one chain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext
    from agentledger.producers.enforce import ToolGuard

__all__ = ["LedgerCallbackHandler", "ThreadOwner", "ThreadState", "first_message"]


@dataclass
class ThreadState:
    """The ledger's side of one LangGraph thread: its run and what its tools did."""

    run: RunContext
    lock: threading.RLock = field(default_factory=threading.RLock)
    asked: dict[str, str] = field(default_factory=dict)
    """tool-call id → the approval id asked for it (survives the node's re-execution)."""
    done: dict[str, Any] = field(default_factory=dict)
    """tool-call id → what the tool returned (a re-executed node does not run it again)."""
    proposed: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """tool-call id → (tool, args): the gated calls the model asked for in its last turn."""
    ready: dict[str, ToolCallContext | BaseException] = field(default_factory=dict)
    """tool-call id → its call (or its refusal), decided before the node reached it."""
    open_tools: dict[UUID, ToolCallContext] = field(default_factory=dict)
    models: dict[UUID, tuple[float, str, str]] = field(default_factory=dict)


class ThreadOwner(Protocol):
    """What :class:`LedgerCallbackHandler` asks of its adapter (a ``LangGraphLedger``)."""

    threads: dict[str, ThreadState]
    guard: ToolGuard
    role: str

    @property
    def guarded(self) -> Mapping[str, Any]: ...  # the gated tools, by name

    def finish(self, thread_id: str, outcome: str = "success", error: str | None = None
               ) -> None: ...


class LedgerCallbackHandler(BaseCallbackHandler):
    """Records one LangGraph thread's model calls and ungated tool calls on its run.

    Model calls are priced by the ledger's price table from the usage the model reports
    (``usage_metadata``, else ``llm_output["token_usage"]``); provider and model come
    from the message's ``response_metadata`` (``model_provider``, ``model_name``), else
    from LangChain's ``ls_provider`` / ``ls_model_name``. Gated tools are recorded by
    :class:`GuardedTool` (with the decision), so the handler skips them.
    """

    raise_error = False

    def __init__(self, adapter: ThreadOwner, thread_id: str):
        self.adapter = adapter
        self.thread_id = thread_id

    def _state(self) -> ThreadState | None:
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
        message = first_message(response)
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
        proposed = {str(c["id"]): (c["name"], dict(c["args"]))
                    for c in (message.tool_calls if message is not None else ())
                    if c.get("id") and c["name"] in self.adapter.guarded}
        with state.lock:
            state.proposed = proposed
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


def first_message(response: LLMResult) -> AIMessage | None:
    """The first chat message of a model's response (its usage and model name), if any."""
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, AIMessage):
                return message
    return None

