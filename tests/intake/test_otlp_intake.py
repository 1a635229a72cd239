"""The OTLP intakes end to end: real OTel exporters → API / Collector-shaped Kafka bytes →
agent.events → the real sink → chdb → the CLI, over a real Tansu broker."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agentledger.core.kafka import client_config
from agentledger.intake.kafka_loop import KafkaIntake
from agentledger.intake.publisher import Publisher
from agentledger.intake.runs import Assembler
from agentledger.intake.spans import decode_protobuf
from agentledger.schemas import topics
from agentledger.schemas.integrity import verify_chain
from agentledger.schemas.signals import ControlSignal
from agentledger.streams.control_policy import parse_policy
from agentledger.streams.decide import Controller
from agentledger.streams.fold import RunFolder
from tests.conftest import CLI, consume_all
from tests.helpers import wait_for
from tests.intake.conftest import Stack
from tests.otlputil import agent_run, request_bytes, request_json, run_spans

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _exporter(stack: Stack, key: str = "acme", **kw: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{stack.api.url}/v1/traces",
                            headers={"Authorization": f"Bearer {stack.keys[key]}"}, **kw)


def _check_run(stack: Stack, trace_id: str) -> dict[str, Any]:
    """trace shows the run with its cost, verify passes and names where custody begins."""
    stack.landed(trace_id, 6)
    done = stack.cli("trace", trace_id, "--json")
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["outcome"] == "success"
    # gpt-4o-mini: 2000 in x 0.15 + 400 out x 0.60 per Mtok, from the SDK's price table
    assert run["cost_usd"] == pytest.approx(0.00054)
    phases = [s["phase"] for s in run["steps"]]
    assert phases.count("model") == 2 and phases.count("tool") == 2
    verified = stack.cli("verify", trace_id, "--json")
    assert verified.returncode == 0, verified.stderr + verified.stdout
    result = json.loads(verified.stdout)
    assert result["ok"] is True and result["runs"][0]["events"] == 6
    assert result["runs"][0]["custody"].startswith("otlp_http")
    return run


def test_python_sdk_otlp_http_run_lands_priced_verified_and_feeds_the_breaker(stack: Stack):
    trace_id = agent_run(_exporter(stack, compression=Compression.Gzip))
    _check_run(stack, trace_id)
    health = httpx.get(f"{stack.api.url}/v1/tools/health", params={"tool": "crm"},
                       headers={"Authorization": f"Bearer {stack.keys['acme']}"}, timeout=30)
    assert health.status_code == 200, health.text
    assert "crm" in health.text and "ConnectionError" not in stack.cli("trace", trace_id).stderr
    # the same events, folded by the stream worker's code, open the crm breaker
    events = [orjson.loads(m.value()) for m in consume_all(stack.bootstrap, topics.EVENTS, 6)]
    mine = [orjson.dumps(e) for e in events if e["trace_id"] == trace_id]
    facts = RunFolder(POLICY).fold(mine).facts["acme"]
    decisions = Controller(POLICY).apply("acme", facts)
    assert [(s.kind, s.scope, s.state) for s in decisions.signals] == [
        ("breaker", "acme/*/crm", "OPEN")]
    args = next(e["body"]["args"] for e in events if e["event_type"] == "tool.call"
                and e["trace_id"] == trace_id)
    assert args == {"ticket": "T-9", "api_key": "[REDACTED]"}


POLICY = parse_policy("version: otlp-test\nbreaker: {min_calls: 1, failure_rate_threshold: 0.5}")


NODE_AGENT = """
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const api = require('@opentelemetry/api');
const exporter = new OTLPTraceExporter({ url: process.argv[2],
  headers: { Authorization: 'Bearer ' + process.argv[3] } });
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();  // the async-context manager that makes startActiveSpan nest
const tracer = provider.getTracer('node.agent');
const chat = (attrs) => tracer.startActiveSpan('chat', { attributes: {
  'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': 'openai',
  'gen_ai.request.model': 'gpt-4o-mini', ...attrs } }, (s) => s.end());
tracer.startActiveSpan('invoke_agent triage', { attributes: {
    'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': 'triage' } }, (root) => {
  chat({ 'gen_ai.usage.input_tokens': 1200, 'gen_ai.usage.output_tokens': 300 });
  tracer.startActiveSpan('execute_tool crm', { attributes: { 'gen_ai.operation.name':
      'execute_tool', 'gen_ai.tool.name': 'crm', 'error.type': 'ConnectionError' } }, (s) => {
    s.setStatus({ code: api.SpanStatusCode.ERROR, message: 'crm unreachable' }); s.end(); });
  chat({ 'gen_ai.usage.input_tokens': 800, 'gen_ai.usage.output_tokens': 100 });
  root.end();
  console.log(root.spanContext().traceId);
});
provider.forceFlush().then(() => provider.shutdown());
"""


def npm_install(where: Path, *packages: str) -> None:
    """Install npm packages into ``where``, or skip the test saying why."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node/npm are not installed")
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                               *packages], cwd=where, capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install timed out")
    if done.returncode != 0:
        pytest.skip(f"npm install failed: {done.stderr.strip()[-300:]}")


def test_node_sdk_otlp_proto_run_lands_the_same(stack: Stack, tmp_path: Path):
    npm_install(tmp_path, "@opentelemetry/api", "@opentelemetry/sdk-trace-node@^2",
                "@opentelemetry/sdk-trace-base@^2", "@opentelemetry/exporter-trace-otlp-proto")
    (tmp_path / "agent.js").write_text(NODE_AGENT)
    done = subprocess.run(["node", "agent.js", f"{stack.api.url}/v1/traces", stack.keys["acme"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trace_id = done.stdout.strip().splitlines()[-1]
    run = _check_run(stack, trace_id)
    assert run["agent"] == "triage"


def test_otlp_json_over_http_maps_like_protobuf(stack: Stack):
    trace_id, spans = run_spans(tool="kb")
    body = gzip.compress(request_json(spans))
    response = stack.post(body, **{"Content-Type": "application/json",
                                   "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "rejectedSpans" not in response.text
    stack.landed(trace_id, 6)
    expected = Assembler(origin="otlp_http", grace_s=0)
    expected.add(decode_protobuf(request_bytes(spans)), "acme")
    (run,) = expected.due()
    stored = stack.stored(trace_id)
    assert [r[2] for r in stored] == [uuid.UUID(e["event_id"]) for e in run.events]


def _kafka_run(stack: Stack, group: str, expected: int) -> Any:
    intake = KafkaIntake(client_config(stack.bootstrap, "consumer", group_id=group),
                         Publisher(stack.bootstrap),
                         Assembler(origin="otlp_kafka", grace_s=0.2, idle_s=5),
                         tenant="acme", topic="otlp_spans")
    worker = threading.Thread(target=intake.run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: intake.stats.events >= expected, 60, what="the intake's events")
    finally:
        intake.stop()
        worker.join(30)
    return intake.stats


def test_kafka_intake_takes_collector_bytes_proto_json_keyed_unkeyed_and_dedups(stack: Stack):
    producer = Producer(client_config(stack.bootstrap, "producer"))
    traces: dict[str, list] = {}
    for encoding in ("proto", "json"):
        for keyed in (True, False):
            trace_id, spans = run_spans(tool=f"tool-{encoding}-{keyed}")
            traces[trace_id] = spans
            # one trace over many messages, 1..N spans each, the root last
            for chunk in (spans[:1], spans[1:3], spans[3:]):
                value = request_bytes(chunk) if encoding == "proto" else request_json(chunk)
                key = bytes.fromhex(trace_id) if keyed else None
                producer.produce("otlp_spans", value, key)
    producer.produce("otlp_spans", b"\x0a\xff\xff garbage", None)  # not OTLP: DLQ
    assert producer.flush(15) == 0
    stats = _kafka_run(stack, "intake-a", 4 * 6)
    assert stats.runs == 4 and stats.rejected_messages == 1
    for trace_id, spans in traces.items():
        rows = stack.landed(trace_id, 6)
        expected = Assembler(origin="otlp_kafka", grace_s=0)
        expected.add(decode_protobuf(request_bytes(spans)), "acme")
        (run,) = expected.due()
        assert [r[2] for r in rows] == [uuid.UUID(e["event_id"]) for e in run.events]
        bodies = {e["event_type"]: e["body"] for e in run.events}
        assert bodies["tool.result"]["status"] == "error" and bodies["tool.call"]["mode"] == "write"
        assert verify_chain(run.events).ok
    # redelivery: a second intake re-reads every message: same events, no duplicates
    again = _kafka_run(stack, "intake-b", 4 * 6)
    assert again.runs == 4
    for trace_id in traces:
        assert len(stack.stored(trace_id)) == 6
        raw = stack.sink.query("SELECT count() FROM events FINAL WHERE trace_id = {t:String}",
                               t=trace_id)
        assert raw == [(6,)]


def test_bad_otlp_gets_the_right_4xx_and_nothing_half_written(stack: Stack):
    trace_id, spans = run_spans(tool="bad-tool")
    good = request_bytes(spans)
    cases = [
        (stack.post(b"\x0a\xff\xff\xff not protobuf"), 400, "protobuf"),
        (stack.post(good, **{"Content-Type": "text/plain"}), 415, "text/plain"),
        (stack.post(good, **{"Content-Encoding": "br"}), 415, "br"),
        (stack.post(b"\x00" * (300 * 1024)), 413, "limit"),
        (stack.post(gzip.compress(b"\x00" * (2 * 1024 * 1024)),
                    **{"Content-Encoding": "gzip"}), 413, "limit"),
        (stack.post(good, key=None), 401, "missing API key"),
        (stack.post(good, key=None, Authorization="Bearer al_nope"), 401, "unknown API key"),
        (stack.post(good, **{"X-AgentLedger-Tenant": "globex"}), 403, "may not write"),
        (stack.post(good, key="both"), 403, "several tenants"),
        (stack.post(b"{]", **{"Content-Type": "application/json"}), 400, "not JSON"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (status, response.text)
        text = response.text if "json" in response.headers.get("content-type", "") else \
            response.content.decode("utf-8", "replace")
        assert words in text, (status, text)
    app = stack.api.server.config.app
    app.state.otlp_max_open_spans = 0  # the intake is full: retryable, nothing taken
    try:
        full = stack.post(good)
    finally:
        app.state.otlp_max_open_spans = 200_000
    assert full.status_code == 503 and full.headers["retry-after"] == "2"
    # a batch with one span of invalid ids: the others land, the bad one is counted
    request = ExportTraceServiceRequest.FromString(good)
    bad = request.resource_spans[0].scope_spans[0].spans[1]
    bad.span_id = b"\x00" * 8
    response = stack.post(request.SerializeToString())
    assert response.status_code == 200, response.text
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "invalid_span_id" in answer.partial_success.error_message
    stack.landed(trace_id, 4)  # the tool span (2 events) was refused
    rejected = wait_for(lambda: stack.sink.query(
        "SELECT reason, error FROM rejected_events FINAL WHERE topic = 'otlp.http'"), 30,
        what="the rejected span in rejected_events")
    assert rejected[0][0] == "invalid_span_id"
    assert len(stack.stored(trace_id)) == 4  # the refused requests added nothing


def test_control_stream_sends_state_then_transitions_scoped_by_tenant(stack: Stack):
    producer = Producer(client_config(stack.bootstrap, "producer"))

    def signal(tenant: str, version: int, state: str) -> None:
        s = ControlSignal(kind="safe_mode", scope=f"{tenant}/triage", rule="errors",
                          state=state, previous_state="normal", version=version,
                          ts=datetime.now(UTC), reason="test")
        producer.produce(topics.CONTROL, s.to_json(), s.key.encode())
        assert producer.flush(10) == 0

    signal("acme", 1, "read_only")
    signal("globex", 1, "read_only")
    seen: list[tuple[str, dict]] = []
    headers = {"Authorization": f"Bearer {stack.keys['acme']}"}
    with httpx.stream("GET", f"{stack.api.url}/v1/control/stream", headers=headers,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
                if kind == "ready":
                    signal("acme", 2, "normal")
                    signal("globex", 2, "normal")
            elif line.startswith("data: ") and kind in ("state", "transition"):
                seen.append((kind, json.loads(line[6:])))
                if seen[-1][1]["version"] == 2:
                    break
    assert all(data["scope"].startswith("acme/") for _, data in seen)
    assert [(data["state"], data["version"]) for _, data in seen][-1] == ("normal", 2)
    assert ("read_only", 1) in [(data["state"], data["version"]) for _, data in seen]
    denied = httpx.get(f"{stack.api.url}/v1/control/stream", timeout=10)
    assert denied.status_code == 401
    other = httpx.get(f"{stack.api.url}/v1/control/stream", params={"tenant": "globex"},
                      headers=headers, timeout=10)
    assert other.status_code == 403 and "globex" not in other.text


def test_intake_cli_refuses_bad_options_with_a_message():
    for args, words in ((["--encoding", "xml"], "--encoding 'xml'"),
                        (["--tenant", "no such tenant!"], "not a tenant name")):
        done = subprocess.run([*CLI, "intake", *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_agentledger_intake_command_lands_collector_bytes_and_stops_cleanly(stack: Stack):
    trace_id, spans = run_spans(tool="cli-tool")
    producer = Producer(client_config(stack.bootstrap, "producer"))
    producer.produce("otlp_spans", request_bytes(spans), bytes.fromhex(trace_id))
    assert producer.flush(15) == 0
    intake = subprocess.Popen([*CLI, "intake", "--tenant", "acme", "--group", "cli-intake",
                               "--grace-s", "0.2"], env=stack.env, stderr=subprocess.PIPE,
                              text=True)
    try:
        stack.landed(trace_id, 6)
    finally:
        intake.terminate()
        _, stderr = intake.communicate(timeout=60)
    assert intake.returncode == 0, stderr
    assert "intake stopped" in stderr and "'runs': " in stderr
