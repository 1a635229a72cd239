"""The one Kafka config builder, and topic administration.

Every Kafka client in the project (SDK producer, sink consumer, DLQ producer, admin,
streams) gets its librdkafka settings here, so delivery guarantees are decided once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from agentledger.schemas import topics
from agentledger.schemas.approvals import APPROVALS_TOPIC

log = logging.getLogger(__name__)

Role = Literal["producer", "consumer", "admin"]


def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection at error level; route it through logging
    # so it is structured and quiet by default instead of raw stderr lines.
    return logging.getLogger("librdkafka")


def client_config(
    bootstrap: str,
    role: Role,
    *,
    group_id: str | None = None,
    session_timeout_ms: int = 6000,
    extra: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """librdkafka settings for one client.

    - producer: idempotent, ``acks=all``, lz4 — no loss and no reordering on retry.
    - consumer: offsets are never committed automatically; the owner commits after its
      output is durable (at-least-once). Reads from the earliest offset when the group has
      none, so a new sink lands history instead of skipping it.
    """
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _quiet_logger()}
    if role == "producer":
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                # Fewer, larger produce requests: the embedded broker's cost per request
                # grows with the topic, so at 5 ms a 1M-event run spent 100 µs of broker
                # CPU per event and end-to-end fell to 6k events/s; at 50 ms, 11 µs and
                # 15k/s (bench/bench_e2e.py). 50 ms is far inside the control loop's 1 s.
                "linger.ms": 50,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 100_000,
                "queue.buffering.max.kbytes": 256 * 1024,
                "message.timeout.ms": 30_000,
            }
        )
    elif role == "consumer":
        if not group_id:
            raise ValueError("a consumer needs a group_id")
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # No producer of ours is transactional, so there is nothing to wait for:
                # read_uncommitted reads up to the high watermark instead of relying on the
                # broker's last-stable-offset bookkeeping.
                "isolation.level": "read_uncommitted",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 8 * 1024 * 1024,
                # Prefetch is bounded: 16 MiB in the consumer's one queue (20k messages per
                # partition at most), so a sink far behind holds a few batches of backlog,
                # not the topic; still ahead of its inserts (bench/bench_sink.py).
                "queued.max.messages.kbytes": 16 * 1024,
                "queued.min.messages": 20_000,
                # When that queue is full librdkafka pauses fetching for this long (1 s by
                # default since 2.4), however fast the queue drains; lz4 batches overfill
                # it by one fetch, so the pause came on nearly every fetch. Against Tansu
                # with 300k SDK events: raw consume 29k msg/s at the default, 670k at
                # 10 ms (docs/reliability.md).
                "fetch.queue.backoff.ms": 10,
            }
        )
    conf.update(extra or {})
    conf.update(overrides)
    return conf


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def default_topics(events_partitions: int) -> list[TopicSpec]:
    """The project's topics (README, "Layout" and docs/reliability.md), with their configs."""
    return [
        TopicSpec(topics.EVENTS, events_partitions),
        TopicSpec(topics.DLQ, 1),
        TopicSpec(topics.CONTROL, 1, {"cleanup.policy": "compact"}),
        TopicSpec(topics.METRICS, 1),
        TopicSpec(APPROVALS_TOPIC, 1, {"cleanup.policy": "compact"}),
        TopicSpec(topics.CHECKPOINTS, 1, {"cleanup.policy": "compact"}),
    ]


def ensure_topics(admin_conf: dict[str, Any], specs: Iterable[TopicSpec],
                  timeout_s: float = 15) -> None:
    """Create missing topics; existing ones are left as they are (idempotent)."""
    admin = AdminClient(admin_conf)
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config)
           for s in specs]
    deadline = time.monotonic() + timeout_s
    pending = {t.topic: t for t in new}
    while pending:
        futures = admin.create_topics(list(pending.values()), operation_timeout=5)
        for name, fut in futures.items():
            try:
                fut.result()
                pending.pop(name)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    pending.pop(name)
                elif time.monotonic() > deadline or not err.retriable():
                    raise
        if pending:
            time.sleep(0.2)


def wait_for_broker(bootstrap: str, timeout_s: float = 20) -> None:
    """Poll cluster metadata until the broker answers, or raise TimeoutError."""
    admin = AdminClient(client_config(bootstrap, "admin"))
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout_s}s: {last}")


def faust_config(
    bootstrap: str,
    *,
    app_id: str,
    partitions: int,
    session_timeout_ms: int = 6000,
    security: dict[str, str] | None = None,
) -> dict[str, Any]:
    """faust-streaming App settings matching :func:`client_config`'s guarantees.

    - at-least-once: faust flushes its producer before committing source offsets, so
      every signal, fact and changelog record of a processed event is in Kafka first;
    - producer ``acks=all``; consumers start from the earliest offset of a new group;
    - a short session timeout, because Tansu answers the first JoinGroup after about half
      of it (measured; see docs/reliability.md on the embedded broker).
    """
    import ssl

    import faust

    conf: dict[str, Any] = {
        "id": app_id,
        "broker": [f"kafka://{host}" for host in bootstrap.split(",")],
        "store": "memory://",
        "topic_partitions": partitions,
        "topic_replication_factor": 1,
        "topic_allow_declare": True,
        "table_standby_replicas": 0,
        "broker_session_timeout": session_timeout_ms / 1000,
        "broker_heartbeat_interval": max(0.5, session_timeout_ms / 3000),
        "broker_rebalance_timeout": session_timeout_ms / 1000,
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": 0.0,
        "stream_wait_empty": False,
        "web_enabled": False,
    }
    security = security or {}
    protocol = security.get("security.protocol", "PLAINTEXT").upper()
    if protocol.startswith("SASL"):
        conf["broker_credentials"] = faust.SASLCredentials(
            username=security.get("sasl.username", ""),
            password=security.get("sasl.password", ""),
            mechanism=security.get("sasl.mechanism", "PLAIN"),
            ssl_context=ssl.create_default_context() if protocol == "SASL_SSL" else None,
        )
    elif protocol == "SSL":
        conf["broker_credentials"] = faust.SSLCredentials(ssl.create_default_context())
    return conf
