"""``agentledger reconcile`` (issue 23): every committed offset of agent.events landed or
was rejected, and offsets removed from the store afterwards are named. Real Tansu broker,
real sink and chdb store; the CLI serves the store itself, as a user's would."""

from __future__ import annotations

import json
import subprocess

import orjson
import pytest
from confluent_kafka import Producer

from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.schemas import topics
from agentledger.services import open_store
from tests.conftest import CLI, consume_all
from tests.sinkutil import run_sink

pytestmark = pytest.mark.integration


def _reconcile(env: dict[str, str]) -> tuple[int, dict, str]:
    done = subprocess.run([*CLI, "reconcile", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_reconcile_accounts_for_every_offset_and_names_removed_ones(
        settings: Settings, service_env: dict[str, str], ledger: Ledger) -> None:
    for n in range(6):
        with ledger.run("ticket_triage", inputs={"n": n}) as run:
            run.finish("success")
    ledger.flush(10)
    producer = Producer(client_config(settings.kafka_bootstrap or "", "producer"))
    producer.produce(topics.EVENTS, b"not an event", b"poison")  # the sink rejects it
    assert producer.flush(10) == 0
    sent = consume_all(settings.kafka_bootstrap or "", topics.EVENTS, 13)
    first = next(m for m in sent if m.value() != b"not an event")
    # a producer retry: the same event again at another offset lands once, as its first
    # copy; the sink records where the copy was, so its offset is accounted for too
    producer.produce(topics.EVENTS, first.value(), first.key())
    assert producer.flush(10) == 0
    stats = run_sink(settings, 14)
    assert stats.consumed >= 14

    code, both, err = _reconcile(service_env)
    assert code == 0, (err, both)
    clean, otlp = both["topics"]
    assert both["ok"] and both["missing"] == 0 and both["expected"] == 14, both
    assert otlp["topic"] == "otlp_spans" and otlp["ok"] and otlp["expected"] == 0, otlp
    assert clean["accounted"] == 14  # 12 events landed + 1 rejected + 1 copy of a leaf
    client = open_store(settings)
    try:
        copies = client.query("SELECT event_id FROM duplicate_copies").result_rows
        stored = client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows
    finally:
        client.close()
    assert len(copies) == 1 and stored == [(12, 12)], (copies, stored)

    client = open_store(settings)
    try:
        victims = client.query("SELECT kafka_partition, kafka_offset FROM events "
                               "ORDER BY kafka_partition, kafka_offset LIMIT 2").result_rows
        for partition, offset in victims:
            client.command("ALTER TABLE events DELETE WHERE kafka_partition = "
                           "{p:UInt16} AND kafka_offset = {o:UInt64}",
                           parameters={"p": partition, "o": offset},
                           settings={"mutations_sync": 2})
    finally:
        client.close()

    code, both, err = _reconcile(service_env)
    assert code == 1, (err, both)
    found = both["topics"][0]
    assert found["missing"] == 2 and not found["ok"] and not both["ok"], both
    named = {(p["partition"], o) for p in found["partitions"] for g in p["gaps"]
             for o in range(g["first"], g["last"] + 1)}
    assert named == {(int(p), int(o)) for p, o in victims}, (named, victims)
    assert all("neither in events nor in rejected_events" in line
               for line in both["problems"]), both["problems"]
    shown = subprocess.run([*CLI, "reconcile"], env=service_env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 1 and "MISSING" in shown.stdout and "gap:" in shown.stdout
    assert orjson.dumps(found)  # the JSON answer is plain data
