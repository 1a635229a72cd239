"""The decode step: one Kafka message → one row for one table, or the reason it is refused.

Which topic holds what is one table, :data:`ROUTES` (topic → route); a topic not in it is
read as events. A route never raises on input: whatever the bytes, it returns a row, a
:class:`~agentledger.core.dead_letters.Rejection`, or ``None`` for what is deliberately not
landed (a compaction tombstone). A row that cannot even be built is rejected as ``unstorable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

from agentledger.core.dead_letters import Rejection
from agentledger.schemas import topics
from agentledger.schemas.event_row import event_row
from agentledger.sinks.decode import decode, decode_metric, decode_signal
from agentledger.sinks.rows import metric_row, signal_row, worker_heartbeat_row

Table = Literal["events", "rejected", "signals", "metrics", "heartbeats"]
"""A :class:`~agentledger.sinks.clickhouse.Batch` field, i.e. the ClickHouse table a row goes to."""
Routed = tuple[Table, list[Any]]
Route = Callable[[bytes | None, int, int, int], "Routed | Rejection | None"]
"""(value, partition, offset, max_bytes) → where the row goes, a rejection, or nothing."""


def route_event(value: bytes | None, partition: int, offset: int,
                max_bytes: int) -> Routed | Rejection:
    event = decode(value, max_bytes)
    if isinstance(event, Rejection):
        return event
    assert value is not None
    return "events", event_row(event, value, partition, offset)


def route_control(value: bytes | None, partition: int, offset: int,
                  max_bytes: int) -> Routed | Rejection | None:
    signal = decode_signal(value, max_bytes)
    if signal is None or isinstance(signal, Rejection):
        return signal
    assert value is not None
    if signal.kind == "heartbeat":
        return "heartbeats", worker_heartbeat_row(signal)
    return "signals", signal_row(signal, value, partition, offset)


def route_metric(value: bytes | None, _partition: int, _offset: int,
                 max_bytes: int) -> Routed | Rejection:
    metric = decode_metric(value, max_bytes)
    if isinstance(metric, Rejection):
        return metric
    return "metrics", metric_row(metric)


ROUTES: Final[dict[str, Route]] = {
    topics.EVENTS: route_event,
    topics.CONTROL: route_control,
    topics.METRICS: route_metric,
}


class DecodeStep:
    """Route one message by its topic; the only place input is judged."""

    def __init__(self, max_bytes: int, routes: dict[str, Route] | None = None):
        self.max_bytes = max_bytes
        self.routes = routes or ROUTES

    def __call__(self, topic: str, value: bytes | None, partition: int,
                 offset: int) -> Routed | Rejection | None:
        route = self.routes.get(topic, route_event)
        try:
            return route(value, partition, offset, self.max_bytes)
        except Exception as exc:  # a row that cannot be built is input too: reject it
            return Rejection("unstorable", f"{type(exc).__name__}: {str(exc)[:1000]}")
