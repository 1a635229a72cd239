"""``agentledger intake`` serves OTLP/HTTP too: a real intake process, broker and sink.

Exporters post to the intake's port (4318 by default; a taken port falls back to a free
one, published in the run dir), with the same keys as the ledger API; a key added while
it runs is accepted without a restart. Refused spans, from HTTP and from the Collector's
Kafka topic alike, reach ``rejected_events`` through the DLQ: the intake holds no store,
the sink lands them.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.core import discovery
from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.core.settings import Settings
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.otlputil import request_bytes, run_spans
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration


def _post(url: str, body: bytes, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/traces", content=body, timeout=30, headers={
        "Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"})


def test_intake_process_serves_otlp_http_and_its_refusals_land_through_the_dlq(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    ensure_topics(client_config(bootstrap, "admin"), [TopicSpec("otlp_spans", 3)])
    acme = new_key()
    append_entry(settings, entry_for("acme-writer", acme, ["acme"]))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    env = {**service_env, "AGENTLEDGER_OTLP_HTTP_PORT": str(taken.getsockname()[1]),
           "AGENTLEDGER_OTLP_GRACE_S": "0.2"}
    with SinkThread(settings) as sink, (tmp_path / "intake.log").open("w") as log:
        intake = subprocess.Popen([*CLI, "intake", "--tenant", "acme", "--grace-s", "0.2"],
                                  env=env, stderr=log)
        try:
            info = wait_for(lambda: discovery.lookup(settings, discovery.INTAKE_FILE), 60,
                            what="the intake to publish its OTLP/HTTP url")
            url = info["otlp_http_url"]
            assert not url.endswith(f":{taken.getsockname()[1]}"), "the taken port"

            # a batch with one span of invalid ids: the others land, the bad one is counted
            trace_id, spans = run_spans(tool="intake-http")
            request = ExportTraceServiceRequest.FromString(request_bytes(spans))
            request.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x00" * 8
            answer = _post(url, request.SerializeToString(), acme)
            assert answer.status_code == 200, answer.text
            partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
            assert partial.rejected_spans == 1 and "invalid_span_id" in partial.error_message
            assert _post(url, request_bytes(spans), "al_not-a-key").status_code == 401

            # the Collector's Kafka topic: bytes that are not OTLP are refused too
            producer = Producer(client_config(bootstrap, "producer"))
            producer.produce("otlp_spans", b"\xffnot otlp", b"k")
            assert producer.flush(15) == 0

            # a key added while the intake runs is taken without a restart
            globex = new_key()
            append_entry(settings, entry_for("globex-writer", globex, ["globex"]))
            other, other_spans = run_spans(tool="intake-http-2")
            wait_for(lambda: _post(url, request_bytes(other_spans), globex).status_code == 200,
                     30, what="the new key to be accepted")

            def stored() -> list[tuple]:
                return sink.query("SELECT tenant, count() FROM events FINAL WHERE trace_id "
                                  "IN ({a:String}, {b:String}) GROUP BY tenant ORDER BY "
                                  "tenant", a=trace_id, b=other)

            # acme: 6 events less the refused tool span's call and result
            assert wait_for(lambda: (rows := stored()) == [("acme", 4), ("globex", 6)] and rows,
                            60, what="both runs landed")
            refused = wait_for(lambda: (rows := sink.query(
                "SELECT topic, reason FROM rejected_events FINAL ORDER BY topic")) and
                len(rows) == 2 and rows, 60, what="both refusals in rejected_events")
            assert refused == [("otlp.http", "invalid_span_id"), ("otlp_spans", "otlp_invalid")]
            assert sink.sink.stats.refusals_landed >= 2
        finally:
            intake.terminate()
            intake.wait(60)
            taken.close()
    assert intake.returncode == 0, (tmp_path / "intake.log").read_text()[-3000:]
    assert discovery.lookup(settings, discovery.INTAKE_FILE) is None, "the url is withdrawn"
