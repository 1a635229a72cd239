"""Every delivery and its attempts, on the compacted topic ``agent.webhooks``.

Why a compacted topic and not a ClickHouse table: the sender is its own process, and in
the embedded stack only the store service may open the store (chdb holds one per
process). A delivery changes state a few times (pending → retrying → delivered/failed)
and people want its *current* state with every attempt, which is exactly one record per
key in a compacted topic: the sender publishes the whole record after each attempt, the
API reads the topic from the start (:class:`DeliveryFollower`, as the agents follow
``agent.control``), and the sender reads it at start to skip what it delivered before
a restart. Each record is signed with the ledger's key (purpose :data:`PURPOSE`), so a
record produced straight to the topic by someone else is not shown.

Limits: the topic keeps every delivery id (compaction keeps one record each, it deletes
none); the console shows the newest :data:`MAX_KEPT` per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Final, Literal

import orjson
from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentledger.core import signing
from agentledger.core.follower import CompactedFollower
from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.queries.common import Scope
from agentledger.schemas.signals import Signature

TOPIC: Final = "agent.webhooks"
PURPOSE: Final = "agentledger.webhook-delivery.v1"
MAX_KEPT: Final = 5000
DeliveryStatus = Literal["pending", "retrying", "delivered", "failed"]


class Attempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    ts: float
    status_code: int | None = None
    error: str = ""
    duration_ms: float = 0.0


class DeliveryRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_id: str
    webhook: str
    format: str
    kind: str
    tenant: str
    queue: str = ""
    subject: str
    title: str = ""
    status: DeliveryStatus = "pending"
    attempts: list[Attempt] = Field(default_factory=list)
    next_attempt_at: float | None = None
    created_at: float = Field(default_factory=time.time)
    version: int = 0
    signature: Signature | None = None


def ensure_topic(bootstrap: str, security: dict[str, str] | None = None) -> None:
    ensure_topics(client_config(bootstrap, "admin", extra=security),
                  [TopicSpec(TOPIC, 1, {"cleanup.policy": "compact"})])


class DeliveryLog:
    """The sender's side: publish a record (signed), waiting for Kafka's acknowledgement."""

    def __init__(self, bootstrap: str, key: signing.LedgerKey,
                 security: dict[str, str] | None = None):
        self._key = key
        self._producer = Producer(client_config(bootstrap, "producer", extra=security))
        self._lock = threading.Lock()

    def publish(self, record: DeliveryRecord, timeout_s: float = 10) -> None:
        value = signing.sign_json(self._key, PURPOSE,
                                  record.model_dump_json(exclude={"signature"}).encode())
        with self._lock:
            self._producer.produce(TOPIC, value, record.delivery_id.encode())
            if self._producer.flush(timeout_s) > 0:
                raise TimeoutError(f"delivery record not acknowledged within {timeout_s}s")

    def close(self) -> None:
        self._producer.flush(5)


class DeliveryFollower(CompactedFollower):
    """The newest record of every delivery (up to :data:`MAX_KEPT`), in memory."""

    def __init__(self, bootstrap: str, *, security: dict[str, str] | None = None,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto"):
        super().__init__(bootstrap, TOPIC, purpose=PURPOSE, trusted=trusted,
                         security=security, name="webhook-deliveries")
        self.records: dict[str, DeliveryRecord] = {}
        self._bootstrap, self._security = bootstrap, security

    def start(self) -> DeliveryFollower:
        ensure_topic(self._bootstrap, self._security)
        super().start()
        return self

    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        if value is None:
            return False
        try:
            raw = orjson.loads(value)
            record = DeliveryRecord.model_validate(raw)
        except (orjson.JSONDecodeError, ValidationError):
            return False
        if not self.verifier.admit(raw, record.delivery_id):
            return False
        current = self.records.get(record.delivery_id)
        if current is None or record.version >= current.version:
            self.records[record.delivery_id] = record
            if len(self.records) > MAX_KEPT:
                oldest = min(self.records.values(), key=lambda r: r.created_at)
                del self.records[oldest.delivery_id]
        return True


def visible(records: Iterable[DeliveryRecord], scope: Scope, *, tenant: str | None = None,
            webhook: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The deliveries ``scope`` may see (its tenants'), newest first: what
    ``GET /v1/webhooks`` and the console's Webhooks page show."""
    scope = scope.narrow(tenant)
    shown = [r for r in records if (scope.tenants is None or r.tenant in scope.tenants)
             and (webhook is None or r.webhook == webhook)]
    shown.sort(key=lambda r: r.created_at, reverse=True)
    return [r.model_dump(mode="json", exclude={"signature"}) for r in shown[:limit]]
