"""The sink against a real broker and a real ClickHouse engine (chdb)."""

from __future__ import annotations

import itertools
import operator
from datetime import datetime

import orjson
import pytest
from confluent_kafka import Producer

from agentledger.core.kafka import client_config
from agentledger.core.store import client_for
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from agentledger.schemas.integrity import verify_chain
from tests.conftest import consume_all
from tests.sinkutil import query, run_sink, summary_rows

pytestmark = pytest.mark.integration


class RecordingLedger(Ledger):
    """Keeps what the SDK emitted, to compare with what ClickHouse holds."""

    emitted: list[dict]

    def send(self, event, traceparent):
        self.emitted.append(event)
        super().send(event, traceparent)


def simulate(bootstrap: str, runs: int, seed: int = 7, error_rate: float = 0.1) -> list[dict]:
    emitted: list[dict] = []

    def make(identity):
        led = RecordingLedger(client_config(bootstrap, "producer"), identity)
        led.emitted = emitted
        return led

    result = Simulator(make, seed=seed, error_rate=error_rate).run(runs)
    assert result.events == len(emitted)
    return emitted


def test_every_event_lands_once_with_its_fields_intact(settings):
    emitted = simulate(settings.kafka_bootstrap, runs=150)
    n = len(emitted)
    stats = run_sink(settings, n)
    assert stats.inserted == n and stats.rejected == 0
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL") == [(n, n)]

    sample = emitted[:: max(1, n // 25)]
    ids = [e["event_id"] for e in sample]
    rows = query(settings, "SELECT event_id, event_type, ts, tenant, agent, trace_id, span_id, "
                 "parent_span_id, run_id, seq, tool, status, model, cost_usd, prev_hash, hash, raw "
                 "FROM events FINAL WHERE event_id IN {ids:Array(UUID)}", ids=ids)
    by_id = {str(r[0]): r for r in rows}
    assert len(by_id) == len(sample)
    for ev in sample:
        row = by_id[ev["event_id"]]
        body = ev["body"]
        assert row[1] == ev["event_type"]
        assert row[2] == datetime.fromisoformat(ev["ts"]).replace(tzinfo=None)
        assert (row[3], row[4], row[5], row[6]) == (
            ev["tenant"], ev["agent"], ev["trace_id"], ev["span_id"])
        assert row[7] == (ev["parent_span_id"] or "")
        assert (row[8], row[9]) == (ev["run_id"], ev["seq"])
        assert row[10] == body.get("tool", "")
        assert row[11] == (body.get("status") or "")
        assert row[12] == body.get("model", "")
        assert row[13] == pytest.approx(body.get("cost_usd", 0.0) or 0.0)
        assert (row[14], row[15]) == (ev["prev_hash"], ev["hash"])
        assert orjson.loads(row[16]) == ev


def test_hash_chain_verifies_for_every_run_in_clickhouse(settings):
    emitted = simulate(settings.kafka_bootstrap, runs=60)
    run_sink(settings, len(emitted))
    rows = query(settings, "SELECT run_id, raw FROM events FINAL ORDER BY run_id, seq")
    runs = {run_id: [orjson.loads(raw) for _, raw in group]
            for run_id, group in itertools.groupby(rows, key=operator.itemgetter(0))}
    assert len(runs) == 60 and sum(map(len, runs.values())) == len(emitted)
    for run_id, events in runs.items():
        assert verify_chain(events).ok, run_id


def test_secrets_in_tool_args_never_reach_kafka_or_clickhouse(settings, ledger, broker):
    secrets = ["hunter2-very-secret", "sk-live-0123456789abcdefghij",
               "abcdefghijklmnopqrstuvwxyz0123"]
    with ledger.run("w") as run, run.tool_call(
            "db", "connect", mode="read",
            args={"db_password": secrets[0], "config": {"api_key": "plain"},
                  "header": f"Authorization: Bearer {secrets[2]}", "note": secrets[1]}):
        pass
    ledger.flush()
    for message in consume_all(broker, topics.EVENTS, 4):
        for secret in secrets:
            assert secret.encode() not in message.value()
    run_sink(settings, 4)
    for secret in secrets:
        hits = query(settings, "SELECT count() FROM events WHERE position(raw, {s:String}) > 0 "
                     "OR position(body, {s:String}) > 0", s=secret)
        assert hits == [(0,)]
    assert query(settings, "SELECT count() FROM events WHERE position(body, '[REDACTED]') > 0")\
        == [(1,)]


def test_garbage_goes_to_dlq_and_rejected_events_and_the_sink_keeps_going(settings):
    settings = settings.model_copy(update={"max_event_bytes": 4096})
    good = simulate(settings.kafka_bootstrap, runs=10)
    template = dict(good[0])
    garbage = {
        b"\x00\xffnot json at all": "invalid_json",
        b'{"valid": "json", "but": "no event"}': "unknown_event_type",
        b"[1, 2, 3]": "schema",
        orjson.dumps({**template, "event_type": "tool.exploded"}): "unknown_event_type",
        orjson.dumps({**template, "trace_id": "xyz"}): "schema",
        orjson.dumps({**template, "body": {**template["body"], "pad": "x" * 8000}}): "oversized",
        b"": "empty",
    }
    producer = Producer(client_config(settings.kafka_bootstrap, "producer"))
    for i, payload in enumerate(garbage):
        producer.produce(topics.EVENTS, payload, key=f"bad-{i}".encode())
    producer.flush(10)
    more_good = simulate(settings.kafka_bootstrap, runs=10, seed=99)  # after the garbage

    n_good = len(good) + len(more_good)
    stats = run_sink(settings, n_good + len(garbage))
    n_good = len(good) + len(more_good)
    assert stats.inserted == n_good and stats.rejected == len(garbage)
    assert query(settings, "SELECT uniqExact(event_id) FROM events FINAL") == [(n_good,)]

    dlq = consume_all(settings.kafka_bootstrap, topics.DLQ, len(garbage))
    assert sorted(m.value() or b"" for m in dlq) == sorted(garbage)
    for message in dlq:
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers[topics.H_REASON] == garbage[message.value() or b""]
        assert headers[topics.H_ERROR] and headers[topics.H_TOPIC] == topics.EVENTS
        assert message.key().startswith(b"bad-")

    rejected = query(settings, "SELECT reason, error, message_key FROM rejected_events FINAL")
    assert sorted(r[0] for r in rejected) == sorted(garbage.values())
    errors = {r[0]: r[1] for r in rejected}
    assert any("trace_id" in r[1] for r in rejected if r[0] == "schema")
    assert "event_type" in errors["unknown_event_type"]
    assert "4096" in errors["oversized"]


def test_redelivered_events_are_invisible_to_queries(settings):
    """A whole topic consumed twice (as after a crash before commit) lands once."""
    # With checkpoints the sink does not even store offsets its Merkle state already
    # covers (sinks/ledger.py, tests/sinks/test_checkpoints.py); without them, and for a
    # crash before the state was persisted, FINAL is what hides the second copy.
    settings = settings.model_copy(update={"checkpoints_enabled": False})
    emitted = simulate(settings.kafka_bootstrap, runs=40)
    run_sink(settings, len(emitted))
    before = summary_rows(settings)
    # Keep the duplicates physically present, so it is FINAL that hides them.
    client = client_for(settings)
    client.command("SYSTEM STOP MERGES events")
    again = settings.model_copy(update={"sink_group": "a-second-group-rereads-everything"})
    run_sink(again, len(emitted))
    n = len(emitted)
    assert query(settings, "SELECT count() FROM events") == [(2 * n,)]  # physically twice
    assert query(settings, "SELECT count() FROM events FINAL") == [(n,)]
    assert summary_rows(settings) == before
    client.command("SYSTEM START MERGES events")
    client.close()
