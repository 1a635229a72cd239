"""``reconcile`` over ``otlp_spans`` (issue 23): every message the Kafka intake committed
became runs or was dead-lettered, and a run deleted from the store afterwards names its
messages' offsets and its trace. Real Tansu broker, real intake loop, sink and chdb."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.intake.kafka_loop import KafkaIntake
from agentledger.intake.publisher import Publisher
from agentledger.intake.runs import Assembler
from tests.helpers import wait_for
from tests.intake.conftest import Stack
from tests.otlputil import request_bytes, run_spans

pytestmark = pytest.mark.integration


def test_reconcile_accounts_for_otlp_spans_offsets_and_names_a_deleted_run(stack: Stack):
    """Every committed otlp_spans message became runs or was dead-lettered; a run deleted
    from the store afterwards names its messages' offsets and its trace (issue 23)."""
    topic, group = "otlp_reconcile", "intake-reconcile"
    ensure_topics(client_config(stack.bootstrap, "admin"), [TopicSpec(topic, 1)])
    producer = Producer(client_config(stack.bootstrap, "producer"))
    victim, kept = run_spans(tool="tool-rec-victim"), run_spans(tool="tool-rec-kept")
    for _trace_id, spans in (victim, kept):
        for chunk in (spans[:2], spans[2:]):
            producer.produce(topic, request_bytes(chunk), None)
    producer.produce(topic, b"\x0a\xff\xff garbage", None)  # dead-lettered whole
    assert producer.flush(15) == 0
    intake = KafkaIntake(client_config(stack.bootstrap, "consumer", group_id=group),
                         Publisher(stack.bootstrap),
                         Assembler(origin="otlp_kafka", grace_s=0.2, idle_s=5),
                         tenant="acme", topic=topic)
    worker = threading.Thread(target=intake.run, daemon=True)
    worker.start()
    try:  # both runs published and every message read (the garbage one dead-lettered)
        wait_for(lambda: intake.stats.events >= 12 and intake.stats.messages >= 5, 60,
                 what="the intake's 2 runs out of 5 messages")
    finally:
        intake.stop()
        worker.join(30)
    assert intake.stats.runs == 2 and intake.stats.rejected_messages == 1, intake.stats
    for trace_id, _spans in (victim, kept):
        stack.landed(trace_id, 6)

    def reconciled() -> dict[str, Any]:
        answer = httpx.post(f"{stack.api.url}/v1/reconcile", timeout=120, json={
            "otlp_topic": topic, "otlp_group": group},
            headers={"Authorization": f"Bearer {stack.keys['operator']}"})
        assert answer.status_code == 200, answer.text
        (found,) = [t for t in answer.json()["topics"] if t["topic"] == topic]
        return found

    clean = wait_for(lambda: (found := reconciled())["accounted"] == 5 and found,
                     60, what="the 5 committed otlp messages accounted for")
    assert clean["ok"] and clean["expected"] == 5 and clean["missing"] == 0, clean

    stack.sink.client.command("ALTER TABLE events DELETE WHERE trace_id = {t:String}",
                              parameters={"t": victim[0]}, settings={"mutations_sync": 2})
    found = reconciled()
    assert not found["ok"] and found["missing"] == 2, found
    gaps = [g for part in found["partitions"] for g in part["gaps"]]
    assert [(g["first"], g["traces"]) for g in gaps] == [(0, [victim[0]]), (1, [victim[0]])]
    assert all("neither in events nor in rejected_events" in g["why"] for g in gaps), gaps
