"""The embedded broker keeps data in memory; when it comes back on the same address the
agent side (the control follower behind every guard) reconnects and goes on by itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from agentledger.broker import EmbeddedBroker, free_port
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.producers.guard import ControlFollower
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

KEY = "breaker:acme/*/salesforce"


def _publish(bootstrap: str, signal: ControlSignal) -> None:
    producer = Producer(client_config(bootstrap, "producer"))
    producer.produce(topics.CONTROL, signal.to_json(), signal.key.encode())
    assert producer.flush(30) == 0


def _breaker(version: int, state: str) -> ControlSignal:
    return ControlSignal(kind="breaker", scope="acme/*/salesforce", state=state,
                         version=version, ts=datetime.now(UTC))


def test_the_control_follower_reconnects_to_a_restarted_broker():
    port = free_port()
    broker = EmbeddedBroker(port).start()
    try:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        with ControlFollower(broker.bootstrap) as follower:
            _publish(broker.bootstrap, _breaker(1, "OPEN"))
            wait_for(lambda: follower.state.get(KEY), 30,
                     what="the first transition")
            broker.stop()
            broker = EmbeddedBroker(port).start()  # same address, empty topics
            ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
            _publish(broker.bootstrap, _breaker(2, "HALF_OPEN"))
            wait_for(lambda: follower.state[KEY].version == 2, 60,
                     what="a transition published after the restart")
            assert follower.state[KEY].state == "HALF_OPEN"
    finally:
        broker.stop()
