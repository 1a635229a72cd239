"""Decide, per Kafka message, whether it is a valid event; never raises on bad input."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from agentledger.core.dead_letters import Rejection
from agentledger.schemas.events import parse_event, validation_reason
from agentledger.schemas.signals import ControlSignal, MetricWindow


def _unexpected(exc: Exception) -> Rejection:
    # Hostile input can trip more than ValidationError (recursion limits, a validator's
    # ValueError); whatever it is, the message is rejected, never allowed to stop the sink.
    return Rejection("schema", f"{type(exc).__name__}: {str(exc)[:1000]}")


def decode(value: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    """The validated event as a dict, or why it was rejected."""
    if not value:
        return Rejection("empty", "message has no value")
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes exceeds the {max_bytes}-byte limit")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", f"not JSON: {exc}")
    except Exception as exc:
        return _unexpected(exc)
    if not isinstance(event, dict):
        return Rejection("schema", f"<event>: expected a JSON object, got {type(event).__name__}")
    try:
        parse_event(event)
    except ValidationError as exc:
        return Rejection(*validation_reason(exc))
    except Exception as exc:
        return _unexpected(exc)
    return event


def decode_signal(value: bytes | None, max_bytes: int) -> ControlSignal | Rejection | None:
    """A control signal (transitions and heartbeats), None for a compaction tombstone."""
    if value is None:
        return None  # compaction tombstone
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return ControlSignal.from_json(value)
    except ValidationError as exc:
        return Rejection(*validation_reason(exc))
    except Exception as exc:
        return _unexpected(exc)


def decode_metric(value: bytes | None, max_bytes: int) -> MetricWindow | Rejection:
    if not value:
        return Rejection("empty", "message has no value")
    if len(value) > max_bytes:
        return Rejection("oversized", f"{len(value)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return MetricWindow.from_json(value)
    except ValidationError as exc:
        return Rejection(*validation_reason(exc))
    except Exception as exc:
        return _unexpected(exc)
