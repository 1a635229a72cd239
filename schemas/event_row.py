"""An event → its ``events`` row. The column list is the one place that matches the DDL
(``schemas/clickhouse/``); the sink writes these rows and ``verify`` re-derives them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

EVENT_COLUMNS: Final = (
    "event_id", "event_type", "schema_version", "ts", "tenant", "workspace", "agent",
    "agent_version", "principal", "on_behalf_of", "env", "trace_id", "span_id",
    "parent_span_id", "run_id", "seq", "workflow", "tool", "action", "mode", "tool_version",
    "status", "error_type", "error", "outcome", "provider", "model", "tokens_in", "tokens_out",
    "cost_usd", "latency_ms", "decision", "prev_hash", "hash", "sig", "body", "raw",
    "kafka_partition", "kafka_offset",
)


def event_row(event: dict[str, Any], raw: bytes, partition: int, offset: int) -> list[Any]:
    """One row for an event that already passed schema validation.

    Works on the decoded dict (not the pydantic model) because the sink's hot path is
    dict access; validation has already guaranteed every key and type used here.
    """
    body = event["body"]
    get = body.get
    totals = get("totals") or {}
    return [
        event["event_id"],
        event["event_type"],
        event["schema_version"],
        datetime.fromisoformat(event["ts"]),
        event["tenant"],
        event["workspace"],
        event["agent"],
        event["agent_version"],
        event["principal"],
        event.get("on_behalf_of") or "",
        event["env"],
        event["trace_id"],
        event["span_id"],
        event.get("parent_span_id") or "",
        event["run_id"],
        event["seq"],
        get("workflow") or "",
        get("tool") or "",
        get("action") or "",
        get("mode") or "",
        get("tool_version") or "",
        get("status") or "",
        get("error_type") or "",
        get("error") or "",
        get("outcome") or "",
        get("provider") or "",
        get("model") or "",
        get("tokens_in") or totals.get("tokens_in") or 0,
        get("tokens_out") or totals.get("tokens_out") or 0,
        float(get("cost_usd") or 0.0),
        float(get("latency_ms") or totals.get("duration_ms") or 0.0),
        get("decision") or "",
        event["prev_hash"],
        event["hash"],
        event.get("sig") or "",
        orjson.dumps(body).decode(),
        raw.decode(),
        partition,
        offset,
    ]
