"""A LangChain tool behind the ledger's gate, and the answers it gives the model
(see :meth:`agentledger.producers.adapters.langgraph.LangGraphLedger.guard_tool`).

A refusal is returned to the model as an error ``ToolMessage`` naming the rule and the
reason: something it can act on, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from agentledger.producers.refusals import ToolDenied, refusal_text

if TYPE_CHECKING:
    from agentledger.producers.adapters.langgraph_recording import ThreadState
    from agentledger.producers.context import ToolCallContext

__all__ = ["GuardedTool", "ToolGate", "refusal_message", "split_tool_input"]


class ToolGate(Protocol):
    """What a :class:`GuardedTool` asks of its adapter (a ``LangGraphLedger``)."""

    def begin(self, tool: GuardedTool, tool_input: Any, config: RunnableConfig | None
              ) -> tuple[ThreadState, str | None, ToolCallContext | None, Any]: ...

    def end(self, state: ThreadState, call_id: str | None, call: ToolCallContext, out: Any,
            error: BaseException | None = None) -> None: ...


def split_tool_input(tool_input: Any) -> tuple[str | None, dict[str, Any]]:
    """(tool-call id, args) of what ``ToolNode`` passes: a ``ToolCall`` or plain args."""
    if isinstance(tool_input, Mapping) and tool_input.get("type") == "tool_call":
        call_id = tool_input.get("id")
        return (call_id if isinstance(call_id, str) else None), dict(tool_input["args"])
    if isinstance(tool_input, Mapping):
        return None, dict(tool_input)
    return None, {"input": tool_input}


def refusal_message(tool: GuardedTool, call_id: str | None, refused: ToolDenied
                    ) -> ToolMessage | str:
    """What the model reads instead of the tool's result: the rule, the reason and what to
    do (a ``ToolMessage`` with ``status="error"`` inside a ``ToolNode``, else the text)."""
    text = refusal_text(tool.catalog_tool, tool.catalog_action, refused)
    if call_id is None:
        return text
    return ToolMessage(content=text, tool_call_id=call_id, name=tool.name,
                       status="error",
                       artifact={"refused": True, "rule": refused.rule,
                                 "reason": refused.reason})


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
        adapter: ToolGate = self.adapter
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
        adapter: ToolGate = self.adapter
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

