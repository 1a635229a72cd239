"""Control signals, metrics, heartbeats and rejections → rows (events: ``schemas.event_row``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

from agentledger.schemas.signals import ControlSignal, MetricWindow

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
