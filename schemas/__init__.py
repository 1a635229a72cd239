"""The contract shared by every part of agentledger: events, signals, topics and DDL.

Everything else imports from here; this package imports nothing of the project.
"""

from agentledger.schemas.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    SCHEMA_VERSION,
    AgentEvent,
    Event,
    parse_event,
    parse_event_json,
)

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AgentEvent",
    "Event",
    "parse_event",
    "parse_event_json",
]
