"""Fixtures: a real Tansu broker on a free loopback port, a real chdb store in tmp."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger


@pytest.fixture
def broker() -> Iterator[str]:
    """A fresh in-memory broker per test (starts in ~0.1 s), with the project's topics."""
    with EmbeddedBroker() as embedded:
        ensure_topics(client_config(embedded.bootstrap, "admin"), default_topics(3))
        yield embedded.bootstrap


@pytest.fixture
def settings(tmp_path: Path, broker: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", kafka_bootstrap=broker,
                    sink_batch_seconds=0.3)


@pytest.fixture
def service_env(settings: Settings) -> dict[str, str]:
    """Environment for a CLI subprocess pointed at this test's broker and store."""
    return {
        **os.environ,
        "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
        "AGENTLEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "AGENTLEDGER_SINK_BATCH_SECONDS": "0.3",
        "AGENTLEDGER_SINK_STATUS_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def identity() -> AgentIdentity:
    return AgentIdentity(tenant="acme", agent="triage-bot", agent_version="1.0.0",
                         principal="svc-triage")


@pytest.fixture
def ledger(broker: str, identity: AgentIdentity) -> Iterator[Ledger]:
    led = Ledger.connect(broker, identity)
    yield led
    led.flush(10)


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    """Read ``expected`` messages of ``topic`` from the start (fresh group), or fail."""
    import time
    import uuid

    consumer = Consumer(client_config(bootstrap, "consumer", group_id=f"t-{uuid.uuid4()}"))
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, timeout=0.5) if not m.error()]
    finally:
        consumer.close()
    assert len(messages) >= expected, f"read {len(messages)} of {expected} from {topic}"
    return messages


CLI = [sys.executable, "-m", "agentledger"]
