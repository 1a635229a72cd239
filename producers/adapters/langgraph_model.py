"""A scripted chat model for running LangGraph graphs offline (examples, tests, benches)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

__all__ = ["ScriptedChatModel"]


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
