"""agentledger: an accountable execution ledger and control loop for production AI agents.

The agent-side SDK is re-exported here, where a user looks first::

    from agentledger import AgentIdentity, Ledger, SafeModeGuard, ToolGuard

The names are loaded on first use, not on ``import agentledger``: every module of the
package imports this one first (the layers below are ``agentledger.schemas``,
``agentledger.core``, ...), so it must cost nothing. ``pip install agentledger`` is the SDK
alone; the ledger's services come with ``agentledger[server]`` (docs/install.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the SDK module that defines it
_SDK = {
    "AgentIdentity": "agentledger.producers.identity",
    "Ledger": "agentledger.producers.emitter",
    "BufferFull": "agentledger.producers.emitter",
    "DeliveryFailed": "agentledger.producers.emitter",
    "RunContext": "agentledger.producers.context",
    "ToolCallContext": "agentledger.producers.context",
    "SafeModeGuard": "agentledger.producers.guard",
    "ControlFollower": "agentledger.producers.guard",
    "ToolGuard": "agentledger.producers.enforce",
}
__all__ = [
    "AgentIdentity", "BufferFull", "ControlFollower", "DeliveryFailed", "Ledger", "RunContext",
    "SafeModeGuard", "ToolCallContext", "ToolGuard",
]

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext
    from agentledger.producers.emitter import BufferFull, DeliveryFailed, Ledger
    from agentledger.producers.enforce import ToolGuard
    from agentledger.producers.guard import ControlFollower, SafeModeGuard
    from agentledger.producers.identity import AgentIdentity


def __getattr__(name: str) -> Any:
    module = _SDK.get(name)
    if module is None:
        raise AttributeError(f"module 'agentledger' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SDK])
