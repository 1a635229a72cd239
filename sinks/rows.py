"""Event → ``events`` row. The column list is the one place that matches the DDL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

from schemas.signals import ControlSignal, MetricWindow

EVENT_COLUMNS: Final = (
    "event_id", "event_type", "schema_version", "ts", "tenant", "workspace", "agent",
    "agent_version", "principal", "on_behalf_of", "env", "trace_id", "span_id",
    "parent_span_id", "run_id", "seq", "workflow", "tool", "action", "mode", "tool_version",
    "status", "error_type", "error", "outcome", "provider", "model", "tokens_in", "tokens_out",
    "cost_usd", "latency_ms", "decision", "prev_hash", "hash", "sig", "body", "raw",
    "kafka_partition", "kafka_offset",
)

SIGNAL_COLUMNS: Final = (
    "ts", "emitted_at", "tenant", "kind", "scope", "rule", "state", "previous_state", "version",
    "reason", "policy_version", "triggered_by", "fallback", "details", "raw", "kafka_partition",
    "kafka_offset",
)

HEARTBEAT_COLUMNS: Final = ("ts", "component", "instance", "status", "lag_events", "details")

METRIC_COLUMNS: Final = (
    "kind", "tenant", "agent", "subject", "window_start", "window_end", "revision", "final",
    "emitted_at", "values",
)

REJECTED_COLUMNS: Final = (
    "received_at", "topic", "partition", "offset", "message_key", "reason", "error",
    "payload_size", "payload_sha256", "payload",
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


def signal_row(signal: ControlSignal, raw: bytes, partition: int, offset: int) -> list[Any]:
    return [
        signal.ts, signal.emitted_at, signal.tenant, signal.kind, signal.scope, signal.rule,
        signal.state, signal.previous_state, signal.version, signal.reason,
        signal.policy_version, list(signal.triggered_by), signal.fallback,
        orjson.dumps(signal.details).decode(), raw.decode(), partition, offset,
    ]


def metric_row(metric: MetricWindow) -> list[Any]:
    return [
        metric.kind, metric.tenant, metric.agent, metric.subject, metric.window_start,
        metric.window_end, metric.revision, metric.final, metric.emitted_at,
        dict(metric.values),
    ]


def heartbeat_row(ts: datetime, component: str, instance: str, status: str,
                  lag_events: int, details: dict[str, Any]) -> list[Any]:
    """One liveness report for ``heartbeats``: the sink's own, a worker's, a child's."""
    return [ts, component, instance, status, int(lag_events),
            orjson.dumps(details, default=str).decode()]


def worker_heartbeat_row(signal: ControlSignal) -> list[Any]:
    """A stream worker's heartbeat from ``agent.control``, as a ``heartbeats`` row."""
    details = dict(signal.details)
    lag = details.get("lag_events")
    return heartbeat_row(signal.emitted_at, "streams", signal.scope, "ok",
                         lag if isinstance(lag, int) else -1, details)
