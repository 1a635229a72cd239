"""Any message the broker accepts ends as a landed event or as a dead letter, once."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from confluent_kafka import Producer

from agentledger.core.kafka import client_config
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from tests.conftest import CLI, consume_all
from tests.helpers import wait_for
from tests.sinks.test_crash import api_count, start_sink
from tests.sinkutil import api_scalar, query

pytestmark = pytest.mark.integration

BIG = 2 * 1024 * 1024


def _produce_raw(bootstrap: str, value: bytes, key: bytes = b"poison") -> None:
    producer = Producer(client_config(bootstrap, "producer", **{"message.max.bytes": 8 << 20}))
    producer.produce(topics.EVENTS, value, key)
    assert producer.flush(30) == 0


def test_two_mb_message_then_good_events_all_land_and_it_is_rejected_once(
        settings, service_env):
    poison = b'{"event_type": "tool.call", "padding": "' + b"x" * BIG + b'"}'
    _produce_raw(settings.kafka_bootstrap, poison)
    sim = Simulator(lambda ident: Ledger.connect(settings.kafka_bootstrap, ident), seed=5)
    produced = sim.run(120, rate=0).events
    sink = start_sink(service_env)
    try:
        wait_for(lambda: api_count(settings) == produced, 90,
                 what=f"all {produced} good events behind the 2 MB message")
        health = subprocess.run([*CLI, "health", "--json"], env=service_env,
                                capture_output=True, text=True, timeout=60)
        report = json.loads(health.stdout)
        assert health.returncode == 0, (report.get("problems"), health.stderr)
        assert report["rejected_last_hour"] == {"oversized": 1}
    finally:
        sink.terminate()
        sink.wait(30)
    digest = hashlib.sha256(poison).hexdigest()
    assert query(settings, "SELECT reason, payload_size, payload_sha256 FROM rejected_events "
                 "FINAL") == [("oversized", len(poison), digest)]
    (dead,) = consume_all(settings.kafka_bootstrap, topics.DLQ, 1)
    headers = dict(dead.headers())
    assert headers[topics.H_SHA256] == digest.encode()
    assert int(headers[topics.H_SIZE]) == len(poison)
    assert headers[topics.H_TRUNCATED] == b"value"
    assert headers[topics.H_TOPIC] == topics.EVENTS.encode()
    assert len(dead.value()) == settings.dlq_max_payload_bytes
    assert poison.startswith(dead.value())

    # Redelivery: a sink in a new group reads everything again; queries see no duplicate.
    again = start_sink({**service_env, "AGENTLEDGER_SINK_GROUP": "second-sink"})
    try:
        # Merges may fold duplicates at any time, so wait on the second sink's own report:
        # everything consumed and committed.
        done = ("SELECT count() FROM heartbeats WHERE component = 'sink' AND instance LIKE "
                f"'%:{again.pid}' AND JSONExtractInt(details, 'consumed') > {produced} "
                "AND JSONExtractInt(details, 'uncommitted') = 0")
        wait_for(lambda: api_scalar(settings, done) > 0, 90,
                 what="the second sink to consume and commit everything")
    finally:
        again.terminate()
        again.wait(30)
    assert query(settings, "SELECT count() FROM rejected_events FINAL") == [(1,)]
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL") == [
        (produced, produced)]
