"""The run hooks that record an OpenAI Agents SDK run's model calls and ungated tool calls
(see :mod:`.openai_agents`).

Delivery: each emit goes through the run's :class:`~agentledger.producers.emitter.Ledger`
(at least once, deduplicated by event id in the sink), synchronously on the run's event
loop thread, so a model call lands on its run's chain in order.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Protocol

from agents import Agent, RunHooks
from agents.items import ModelResponse
from agents.run_context import RunContextWrapper

if TYPE_CHECKING:
    from agentledger.producers.adapters.openai_agents_session import AgentSession
    from agentledger.producers.adapters.openai_agents_tools import GatedTool
    from agentledger.producers.enforce import ToolGuard

__all__ = ["HooksOwner", "LedgerRunHooks"]


class HooksOwner(Protocol):
    """What :class:`LedgerRunHooks` asks of its adapter (an ``AgentsLedger``)."""

    guard: ToolGuard
    role: str
    provider: str
    model_name: str | None
    gated: dict[str, GatedTool]


class LedgerRunHooks(RunHooks[Any]):
    """Records one Agents SDK run's model calls and ungated tool calls on its ledger run.

    Model calls are priced by the ledger's price table from the usage the model reports
    (``ModelResponse.usage``: input, output and cached tokens). Gated tools are recorded by
    the wrapper (with their decision), so the hooks skip them. Hooks of your own
    (``hooks=`` to :meth:`AgentsLedger.run`) are called after the ledger's.
    """

    def __init__(self, adapter: HooksOwner, session: AgentSession,
                 inner: RunHooks[Any] | None = None):
        self.adapter = adapter
        self.session = session
        self.inner = inner

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_end(context, agent, output)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_handoff(context, from_agent, to_agent)

    async def on_llm_start(self, context: RunContextWrapper[Any], agent: Agent[Any],
                           system_prompt: str | None, input_items: list[Any]) -> None:
        self.session.models[agent.name] = time.perf_counter()
        if self.inner is not None:
            await self.inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any],
                         response: ModelResponse) -> None:
        if self.inner is not None:
            await self.inner.on_llm_end(context, agent, response)
        run = self.session.run
        t0 = self.session.models.pop(agent.name, None)
        if run.finished:
            return
        usage = response.usage
        details = getattr(usage, "input_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        model = self._model_name(agent)
        run.model_call(provider=self.adapter.provider, model=model, model_version=model,
                       role=self.adapter.role, tokens_in=int(usage.input_tokens),
                       tokens_out=int(usage.output_tokens), cached_tokens=cached,
                       latency_ms=round((time.perf_counter() - t0) * 1000, 3) if t0 else 0.0)

    def _model_name(self, agent: Agent[Any]) -> str:
        model = agent.model
        if isinstance(model, str):
            return model
        named = getattr(model, "model", None)
        if isinstance(named, str):
            return named
        return self.adapter.model_name or "unknown"

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Any,
                            tool: Any) -> None:
        if self.inner is not None:
            await self.inner.on_tool_start(context, agent, tool)
        call_id = getattr(context, "tool_call_id", None)
        name = getattr(tool, "name", "tool")
        run = self.session.run
        if call_id is None or name in self.adapter.gated or run.finished:
            return
        try:
            args = json.loads(getattr(context, "tool_arguments", "") or "{}")
        except json.JSONDecodeError:
            args = {"input": getattr(context, "tool_arguments", "")}
        mode = self.adapter.guard.mode_of(name, name, "read")
        call = run.tool_call(name, name, mode=mode,
                             args=args if isinstance(args, dict) else {"input": args})
        call.__enter__()
        self.session.open_tools[call_id] = call

    async def on_tool_end(self, context: RunContextWrapper[Any], agent: Any, tool: Any,
                          result: object) -> None:
        if self.inner is not None:
            await self.inner.on_tool_end(context, agent, tool, result)
        call_id = getattr(context, "tool_call_id", None)
        call = self.session.open_tools.pop(call_id, None) if call_id else None
        if call is not None:
            call.__exit__(None, None, None)

