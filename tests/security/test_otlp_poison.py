"""Finding 3 against the real intake process: a poison span stops nothing.

Before: a tool argument above 2**53 killed the run closer; every later trace, of every
tenant, was answered 200 and never landed, and the Kafka intake crash-looped. Now, over
HTTP and over the Collector's Kafka topic: the reported poison lands (the integer kept
exactly, as a string), a span the ledger cannot hold is refused into ``rejected_events``
with its reason, a good trace sent after it lands, and the intake process is still alive.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.core import discovery
from agentledger.core.kafka import TopicSpec, client_config, ensure_topics
from agentledger.core.settings import Settings
from agentledger.intake.spans import MAX_DEPTH
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.otlputil import request_bytes, run_spans
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration


def _poisoned(tool: str) -> tuple[str, bytes, bytes]:
    """(trace id, the reported big-int poison, a span nested past the limit): one trace."""
    trace_id, spans = run_spans(tool=tool)
    request = ExportTraceServiceRequest.FromString(request_bytes(spans))
    tool_span = next(s for s in request.resource_spans[0].scope_spans[0].spans
                     if s.name.startswith("execute_tool"))
    for kv in tool_span.attributes:
        if kv.key == "gen_ai.tool.call.arguments":
            kv.value.string_value = '{"order": 12345678901234567890, "api_key": "sk-x"}'
    big_int = request.SerializeToString()
    value = AnyValue(string_value="leaf")
    for _ in range(MAX_DEPTH + 1):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    tool_span.attributes.append(KeyValue(key="deep", value=value))
    return trace_id, big_int, request.SerializeToString()


def test_poison_spans_over_http_and_kafka_stop_nothing(settings: Settings,
                                                       service_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    ensure_topics(client_config(bootstrap, "admin"), [TopicSpec("otlp_spans", 3)])
    keys = {"acme": new_key(), "globex": new_key()}
    for tenant, key in keys.items():
        append_entry(settings, entry_for(f"{tenant}-writer", key, [tenant]))
    env = {**service_env, "AGENTLEDGER_OTLP_HTTP_PORT": "0", "AGENTLEDGER_OTLP_GRACE_S": "0.2"}
    with SinkThread(settings) as sink, (tmp_path / "intake.log").open("w") as log:
        intake = subprocess.Popen([*CLI, "intake", "--tenant", "acme", "--grace-s", "0.2"],
                                  env=env, stderr=log)
        try:
            url = wait_for(lambda: discovery.lookup(settings, discovery.INTAKE_FILE), 60,
                           what="the intake to publish its OTLP/HTTP url")["otlp_http_url"]

            def post(body: bytes, tenant: str) -> ExportTraceServiceResponse:
                answer = httpx.post(f"{url}/v1/traces", content=body, timeout=30, headers={
                    "Content-Type": "application/x-protobuf",
                    "Authorization": f"Bearer {keys[tenant]}"})
                assert answer.status_code == 200, answer.text
                return ExportTraceServiceResponse.FromString(answer.content)

            def events(trace_id: str) -> list[tuple]:
                return sink.query("SELECT tenant, event_type, body FROM events FINAL WHERE "
                                  "trace_id = {t:String} ORDER BY seq", t=trace_id)

            # HTTP: the reported poison lands, exact; a too-deep span is refused and counted
            exact, big_int, _ = _poisoned("poison-http")
            assert post(big_int, "acme").partial_success.rejected_spans == 0
            refused, _, too_deep = _poisoned("deep-http")
            partial = post(too_deep, "acme").partial_success
            assert partial.rejected_spans == 1 and "invalid_attribute" in partial.error_message
            good, spans = run_spans(tool="after-poison")
            assert post(request_bytes(spans), "globex").partial_success.rejected_spans == 0
            landed = wait_for(lambda: (rows := events(good)) and len(rows) == 6 and rows, 60,
                              what="globex's good trace, sent after the poison, to land")
            assert {row[0] for row in landed} == {"globex"}
            rows = wait_for(lambda: (r := events(exact)) and len(r) == 6 and r, 60,
                            what="the big-int trace to land")
            call = next(body for _, kind, body in rows if kind == "tool.call")
            assert '"order":"12345678901234567890"' in call.replace(" ", ""), call
            assert '"api_key":"[REDACTED]"' in call.replace(" ", ""), call
            assert wait_for(lambda: len(events(refused)) == 4, 60,
                            what="the deep trace's 4 events (its tool span refused)")

            # Kafka: the same two poisons on the Collector's topic, then a good trace
            producer = Producer(client_config(bootstrap, "producer"))
            k_exact, k_big_int, _ = _poisoned("poison-kafka")
            k_refused, _, k_too_deep = _poisoned("deep-kafka")
            k_good, k_spans = run_spans(tool="after-poison-kafka")
            for trace_id, body in ((k_exact, k_big_int), (k_refused, k_too_deep),
                                   (k_good, request_bytes(k_spans))):
                producer.produce("otlp_spans", body, bytes.fromhex(trace_id))
            assert producer.flush(15) == 0
            for trace_id, count in ((k_good, 6), (k_exact, 6), (k_refused, 4)):
                wait_for(lambda t=trace_id, n=count: len(events(t)) == n, 60,
                         what=f"{count} events of Kafka trace {trace_id}")

            refusals = wait_for(lambda: (r := sink.query(
                "SELECT topic, reason, error FROM rejected_events FINAL ORDER BY topic"))
                and len(r) == 2 and r, 60, what="both deep spans in rejected_events")
            assert [(t, reason) for t, reason, _ in refusals] == [
                ("otlp.http", "invalid_attribute"), ("otlp_spans", "invalid_attribute")]
            assert all(f"deeper than {MAX_DEPTH}" in error for _, _, error in refusals)
            assert intake.poll() is None, "the intake process is still alive"
            beats = list(settings.run_dir.glob("otlp-closer-*.json"))
            assert {p.name.split("-")[2] for p in beats} >= {"kafka", "intake"}, beats
        finally:
            intake.terminate()
            intake.wait(60)
    assert intake.returncode == 0, (tmp_path / "intake.log").read_text()[-3000:]
