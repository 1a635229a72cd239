"""Batches of rows and the ClickHouse insert. Knows nothing of Kafka beyond offsets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from sinks.rows import (
    EVENT_COLUMNS,
    HEARTBEAT_COLUMNS,
    METRIC_COLUMNS,
    REJECTED_COLUMNS,
    SIGNAL_COLUMNS,
)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch is closed: whichever of rows, bytes or age is reached first."""

    max_rows: int = 50_000
    max_bytes: int = 32 * 1024 * 1024
    max_seconds: float = 1.0


@dataclass
class Batch:
    events: list[list[Any]] = field(default_factory=list)
    rejected: list[list[Any]] = field(default_factory=list)
    signals: list[list[Any]] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)
    heartbeats: list[list[Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) → next offset to consume, i.e. what to commit."""
    nbytes: int = 0
    messages: int = 0
    """Kafka messages behind this batch's rows (status rows are not messages)."""
    opened: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejected) + len(self.signals) + len(self.metrics)

    def track(self, topic: str, partition: int, offset: int, size: int) -> None:
        self.offsets[(topic, partition)] = offset + 1
        self.nbytes += size
        self.messages += 1

    def full(self, policy: BatchPolicy) -> bool:
        return (
            len(self) >= policy.max_rows
            or self.nbytes >= policy.max_bytes
            or ((bool(self.offsets) or bool(self.heartbeats))
                and time.monotonic() - self.opened >= policy.max_seconds)
        )


class ClickHouseWriter:
    """Inserts a batch's rows; returns only when ClickHouse acknowledged them."""

    def __init__(self, client: Client, database: str):
        self.client = client
        self.events_table = f"{database}.events"
        self.rejected_table = f"{database}.rejected_events"
        self.signals_table = f"{database}.control_signals"
        self.metrics_table = f"{database}.metrics"
        self.heartbeats_table = f"{database}.heartbeats"

    def write(self, batch: Batch) -> None:
        if batch.events:
            self.client.insert(self.events_table, batch.events, column_names=EVENT_COLUMNS)
        if batch.rejected:
            self.client.insert(self.rejected_table, batch.rejected, column_names=REJECTED_COLUMNS)
        if batch.signals:
            self.client.insert(self.signals_table, batch.signals, column_names=SIGNAL_COLUMNS)
        if batch.metrics:
            self.client.insert(self.metrics_table, batch.metrics, column_names=METRIC_COLUMNS)
        if batch.heartbeats:
            self.client.insert(self.heartbeats_table, batch.heartbeats,
                               column_names=HEARTBEAT_COLUMNS)
