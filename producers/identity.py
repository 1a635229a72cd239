"""Who emits: the identity a Ledger copies into every event's envelope."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who emits: copied into every event's envelope."""

    tenant: str
    agent: str
    agent_version: str
    principal: str
    workspace: str = "default"
    env: str = "prod"
