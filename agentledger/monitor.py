"""Liveness rows the store-owning process lands beside its own: the supervisor's children,
the embedded broker, and how far the stream workers are behind.

They go to ``heartbeats`` through the sink's batches (see
:class:`~agentledger.sinks.consumer.Sink`), so ``/v1/health`` and the dashboards read one
table whatever runs where. The stream workers' lag is measured from the outside: their
consumer group's committed offsets on ``agent.events`` against the end of each partition,
where the end is the larger of the broker's high watermark and what this sink has committed
(Tansu's high watermark can undercount by a batch, the sink's position cannot overcount).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from agentledger.core import discovery
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.intake.publisher import closer_rows
from agentledger.schemas import topics
from agentledger.sinks.consumer import Sink, SinkStats
from agentledger.sinks.rows import heartbeat_row

log = logging.getLogger(__name__)


class PipelineReporter:
    """Called by the sink every status interval; returns ``heartbeats`` rows."""

    def __init__(self, settings: Settings, bootstrap: str, sink: Sink):
        self.settings = settings
        self.sink = sink
        # Never subscribes, so it never joins (or disturbs) the stream workers' group.
        self._offsets = Consumer(client_config(
            bootstrap, "consumer", group_id=settings.streams_group,
            extra=settings.kafka_security))

    def __call__(self, _stats: SinkStats) -> list[list[Any]]:
        now = datetime.now(UTC)
        rows = self._supervised(now)
        rows += [heartbeat_row(*closer) for closer in closer_rows(self.settings, now)]
        lag = self._streams_lag()
        if lag is not None:
            behind, per_partition = lag
            status = "behind" if behind > self.settings.health_streams_max_lag else "ok"
            rows.append(heartbeat_row(now, "streams-lag", self.settings.streams_group, status,
                                      behind, {"partitions": per_partition}))
        return rows

    def _supervised(self, now: datetime) -> list[list[Any]]:
        status = discovery.lookup(self.settings, discovery.SUPERVISOR_FILE)
        if not status:
            return []
        rows = [heartbeat_row(now, "child", child["name"], child["state"], -1, child)
                for child in status.get("children", [])]
        broker = status.get("broker")
        if broker:
            rows.append(heartbeat_row(now, "broker", broker["bootstrap"],
                                      "ok" if broker["alive"] else "down", -1, broker))
        return rows

    def _streams_lag(self) -> tuple[int, dict[str, int]] | None:
        """Events the stream workers have not committed, or None if they never have."""
        try:
            metadata = self._offsets.list_topics(topics.EVENTS, timeout=2)
            partitions = sorted(metadata.topics[topics.EVENTS].partitions)
            committed = self._offsets.committed(
                [TopicPartition(topics.EVENTS, p) for p in partitions], timeout=2)
            if all(tp.offset < 0 for tp in committed):
                return None
            per_partition = {}
            for tp in committed:
                key = (topics.EVENTS, tp.partition)
                # The sink just read this partition's end for its own lag; ask only for the
                # partitions another sink of the group owns.
                high = self.sink.high_watermarks.get(key)
                if high is None:
                    _low, high = self._offsets.get_watermark_offsets(tp, timeout=2,
                                                                      cached=False)
                end = max(high, self.sink.committed.get(key, 0))
                per_partition[str(tp.partition)] = max(0, end - max(tp.offset, 0))
            return sum(per_partition.values()), per_partition
        except (KafkaException, KeyError) as exc:
            log.debug("stream lag unavailable", extra={"error": str(exc)})
            return None

    def close(self) -> None:
        self._offsets.close()
