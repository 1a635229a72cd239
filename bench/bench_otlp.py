"""OTel intake rate: spans/s from the OpenTelemetry SDK's exporter to queryable ledger events.

    .venv/bin/python bench/bench_otlp.py [--runs 5000] [--json] [--fuzz [--share 0.1]]

Agent runs (invoke_agent → chat → execute_tool → chat, GenAI semconv) are recorded once
with the OpenTelemetry Python SDK. Then, each timed from the first byte sent to the last
event queryable in the store (``SELECT count() FROM events`` through the ledger API):

- ``http``: the SDK's OTLP/HTTP protobuf exporter posts 512-span batches (the
  BatchSpanProcessor's size) from two threads to ``POST /v1/traces`` of an
  ``agentledger intake`` process (its OTLP/HTTP port, as under ``agentledger up``), with a
  store service (``agentledger sink``: sink + API in one process) landing the events;
- ``kafka``: the same ``ExportTraceServiceRequest`` bytes, produced to ``otlp_spans`` as
  the Collector's Kafka exporter writes them, read by the same intake process;
- ``http_api`` (with ``--api``): the exporter posting to the ledger API's own
  ``/v1/traces``, in the store process, beside the sink.

CPU seconds of every process involved (exporter/producer, API + sink, intake, broker) are
reported too: unlike wall time they are not inflated by other load on the machine, and
``cpu_bound_2core_spans_per_s`` (2 cores / CPU seconds per span) is what two idle cores
would reach if CPU were the only limit. Raw baselines of the same run: producing those
bytes to Kafka with no intake, and the SDK exporter's encoding alone.
``http_accept_spans_per_s`` is how fast the API answered the exports (before runs close
and the sink lands them). The run-closing grace is 0.5 s in both intakes (it delays the
last run, not the rate). The last line is one JSON object; ``spans_per_s`` is the slower
intake's rate.

``--fuzz``: no span can stop the intake, measured. In one invocation, for each intake
(HTTP and Kafka), a clean stream and then the same runs with a share of poison spans
mixed into them (``--share`` of the runs get one extra span: integers above 2**53 in tool
arguments and tokens, NaN cost, nesting past the limit, zero span ids, bytes and 100 kB
strings), both sent the same way (pre-encoded protobuf, two posting threads / one
producer). Every span sent is then accounted: ``landed`` (its events are in the store),
``refused`` (a row in ``rejected_events``), ``lost`` (neither: must be 0), and the valid
spans' rate of the fuzzed stream is printed beside the clean one's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentledger.auth import append_entry, entry_for, new_key  # noqa: E402
from agentledger.broker import EmbeddedBroker  # noqa: E402
from agentledger.core import discovery  # noqa: E402
from agentledger.core.kafka import TopicSpec, client_config, default_topics, ensure_topics  # noqa: E402
from agentledger.core.settings import Settings  # noqa: E402

BATCH = 512
EVENTS_PER_RUN = 6
SPANS_PER_RUN = 4


def agent_run(exporter: SpanExporter, *, tool: str = "crm") -> str:
    """agent → chat → execute_tool (error) → chat in GenAI semconv; returns the trace id.

    The same run the OTLP tests record (benches do not import tests)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot",
                                                        "service.version": "2.0.0"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("my.agent")
    with tracer.start_as_current_span("invoke_agent triage", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}) as root:
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300}):
            pass
        with tracer.start_as_current_span(f"execute_tool {tool}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                "gen_ai.tool.call.id": "call_1", "error.type": "ConnectionError",
                "gen_ai.tool.call.arguments": '{"ticket": "T-9", "api_key": "sk-x"}'}) as s:
            s.set_status(Status(StatusCode.ERROR, "crm unreachable"))
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 800,
                "gen_ai.usage.completion_tokens": 100}):
            pass
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()
    return trace_id


def record_runs(n: int) -> list:
    spans: list = []
    for i in range(n):
        memory = InMemorySpanExporter()  # agent_run shuts its provider (and exporter) down
        agent_run(memory, tool=f"tool{i % 20}")
        spans += memory.get_finished_spans()
    return spans


def batches(spans: list) -> list[list]:
    return [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]


def published(settings: Settings, name: str, proc: subprocess.Popen) -> dict[str, Any]:
    """What child ``proc`` published in the run dir under ``name``, once it did (60 s)."""
    deadline = time.monotonic() + 60
    while not (info := discovery.lookup(settings, name)):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{proc.args} did not publish {name}")
        time.sleep(0.1)  # polling the file, with a deadline
    return info


class Store:
    """A store service child process and a way to count its events."""

    def __init__(self, settings: Settings, env: dict[str, str]):
        self.settings = settings
        self.proc = subprocess.Popen([sys.executable, "-m", "agentledger", "sink"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = published(settings, discovery.STORE_FILE, self.proc)["api_url"]
        self.key = (settings.run_dir / "api.key").read_text().strip()

    def count(self, tenant: str) -> int:
        response = httpx.post(f"{self.url}/v1/sql", timeout=30, json={
            "sql": "SELECT count() FROM events WHERE tenant = {t:String}",
            "parameters": {"t": tenant}}, headers={"Authorization": f"Bearer {self.key}"})
        response.raise_for_status()
        return int(response.json()["rows"][0][0])

    def wait(self, tenant: str, expected: int, timeout_s: float = 600) -> float:
        deadline = time.monotonic() + timeout_s
        while (found := self.count(tenant)) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{found} of {expected} events of {tenant} landed")
            time.sleep(0.25)  # each count is a query in the measured process: not too often
        return time.monotonic()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


class CpuMeter:
    """CPU seconds (user + system) of the given processes plus this one, since creation:
    a figure the machine's other load does not inflate, unlike wall time."""

    def __init__(self, *pids: int):
        self.procs = [psutil.Process(pid) for pid in (os.getpid(), *pids)]
        self.start = self._now()

    def _now(self) -> dict[int, float]:
        return {p.pid: sum(p.cpu_times()[:2]) for p in self.procs if p.is_running()}

    def used(self) -> float:
        now = self._now()
        return sum(now[pid] - self.start.get(pid, 0.0) for pid in now)


def http_phase(store: Store, url: str, key: str, tenant: str, spans: list, warm: list,
               *pids: int) -> tuple[float, float, float]:
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces",
                                headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert exporter.export(warm) == SpanExportResult.SUCCESS
    warm_events = len(warm) // SPANS_PER_RUN * EVENTS_PER_RUN
    store.wait(tenant, warm_events)
    cpu = CpuMeter(store.proc.pid, *pids)
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(exporter.export, batches(spans)))
    accepted = time.monotonic()
    assert all(r == SpanExportResult.SUCCESS for r in results), results
    end = store.wait(tenant, warm_events + len(spans) // SPANS_PER_RUN * EVENTS_PER_RUN)
    return len(spans) / (end - start), len(spans) / (accepted - start), cpu.used()


class Intake:
    """An ``agentledger intake`` child process: Kafka loop and OTLP/HTTP port."""

    def __init__(self, settings: Settings, env: dict[str, str], tenant: str,
                 group: str = "agentledger-intake", topic: str = "otlp_spans"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentledger", "intake", "--tenant", tenant,
             "--grace-s", "0.5", "--group", group, "--topic", topic],
            env={**env, "AGENTLEDGER_OTLP_HTTP_PORT": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = published(settings, discovery.INTAKE_FILE, self.proc)["otlp_http_url"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def kafka_phase(store: Store, intake: Intake, bootstrap: str, tenant: str,
                payloads: list[bytes], warm: bytes, warm_spans: int,
                broker_pid: int) -> tuple[float, float]:
    producer = Producer(client_config(bootstrap, "producer"))
    producer.produce("otlp_spans", warm)
    producer.flush(30)
    warm_events = warm_spans // SPANS_PER_RUN * EVENTS_PER_RUN
    store.wait(tenant, warm_events)
    cpu = CpuMeter(store.proc.pid, broker_pid, intake.proc.pid)
    start = time.monotonic()
    for value in payloads:
        producer.produce("otlp_spans", value)
        producer.poll(0)
    producer.flush(60)
    spans = len(payloads) * BATCH
    end = store.wait(tenant, warm_events + spans // SPANS_PER_RUN * EVENTS_PER_RUN)
    return spans / (end - start), cpu.used()


def raw_produce(bootstrap: str, payloads: list[bytes]) -> float:
    ensure_topics(client_config(bootstrap, "admin"), [TopicSpec("otlp_raw", 3)])
    producer = Producer(client_config(bootstrap, "producer"))
    start = time.monotonic()
    for value in payloads:
        producer.produce("otlp_raw", value)
        producer.poll(0)
    producer.flush(60)
    return len(payloads) * BATCH / (time.monotonic() - start)


POISONS = ("big_int_args", "nan_cost", "too_deep", "zero_span_id", "huge_tokens",
           "bytes_and_long_string")


def _poison_span(request: ExportTraceServiceRequest, root: Any, kind: str, n: int) -> None:
    """One extra span of ``kind`` in the root's trace (a child of the run's root)."""
    span = request.resource_spans[0].scope_spans[0].spans.add()
    span.trace_id, span.parent_span_id = root.trace_id, root.span_id
    span.span_id = b"\x00" * 8 if kind == "zero_span_id" else (0xF000_0000 + n).to_bytes(8, "big")
    span.name, span.start_time_unix_nano = f"poison {kind}", root.start_time_unix_nano + 1
    span.end_time_unix_nano = span.start_time_unix_nano + 1000
    model = kind in ("nan_cost", "huge_tokens")
    attrs: dict[str, AnyValue] = {"gen_ai.operation.name": AnyValue(
        string_value="chat" if model else "execute_tool"),
        "gen_ai.tool.name": AnyValue(string_value="poison")}
    if kind == "big_int_args":
        attrs["gen_ai.tool.call.arguments"] = AnyValue(
            string_value='{"order": 12345678901234567890, "n": -98765432109876543210}')
    elif kind == "nan_cost":
        attrs["gen_ai.usage.cost"] = AnyValue(double_value=float("nan"))
    elif kind == "huge_tokens":
        attrs["gen_ai.usage.input_tokens"] = AnyValue(int_value=2**63 - 1)
    elif kind == "too_deep":
        value = AnyValue(string_value="leaf")
        for _ in range(40):
            outer = AnyValue()
            outer.array_value.values.append(value)
            value = outer
        attrs["deep"] = value
    elif kind == "bytes_and_long_string":
        attrs["blob"] = AnyValue(bytes_value=os.urandom(64))
        attrs["gen_ai.tool.call.arguments"] = AnyValue(string_value="x" * 100_000)
    span.attributes.extend(KeyValue(key=k, value=v) for k, v in attrs.items())


def fuzz_payloads(spans: list, share: float) -> tuple[list[bytes], list[bytes], int]:
    """(clean payloads, the same with poison spans mixed in, poison spans added)."""
    clean, fuzzed, added = [], [], 0
    every = max(1, round(1 / share)) if share > 0 else 0
    for batch in batches(spans):
        request = encode_spans(batch)
        clean.append(request.SerializeToString())
        roots = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
                 if not s.parent_span_id]
        poisoned = ExportTraceServiceRequest()
        poisoned.CopyFrom(request)
        for i, root in enumerate(roots):
            if every and i % every == 0:
                _poison_span(poisoned, root, POISONS[added % len(POISONS)], added)
                added += 1
        fuzzed.append(poisoned.SerializeToString())
    return clean, fuzzed, added


class Accounting:
    """Where every span sent to one tenant went: landed (events in the store, one distinct
    (trace, span) each: every bench span that is accepted writes at least one event) or
    refused (``rejected_events`` rows of the intake's topic); the rest is lost."""

    def __init__(self, store: Store, tenant: str, topic: str):
        self.store, self.tenant, self.topic = store, tenant, topic
        self.refused_before = self._refused()
        self.landed_before = self._landed()

    def _sql(self, sql: str, **params: str) -> int:
        response = httpx.post(f"{self.store.url}/v1/sql", timeout=30, json={
            "sql": sql, "parameters": params},
            headers={"Authorization": f"Bearer {self.store.key}"})
        response.raise_for_status()
        return int(response.json()["rows"][0][0])

    def _refused(self) -> int:
        return self._sql("SELECT count() FROM rejected_events FINAL WHERE topic = {t:String}",
                         t=self.topic)

    def _landed(self) -> int:
        return self._sql("SELECT uniqExact(trace_id, span_id) FROM events "
                         "WHERE tenant = {t:String}", t=self.tenant)

    def now(self) -> tuple[int, int]:
        return self._landed() - self.landed_before, self._refused() - self.refused_before

    def wait(self, sent: int, timeout_s: float = 600) -> tuple[float, int, int]:
        """(time all was accounted, landed, refused); stops at the deadline."""
        deadline = time.monotonic() + timeout_s
        while sum(found := self.now()) < sent and time.monotonic() < deadline:
            time.sleep(0.25)  # each count is a query in the measured process: not too often
        return time.monotonic(), *found


def fuzz_phase(store: Store, send: Any, tenant: str, topic: str, payloads: list[bytes],
               sent: int, valid: int) -> dict[str, Any]:
    account = Accounting(store, tenant, topic)
    start = time.monotonic()
    send(payloads)
    end, landed, refused = account.wait(sent)
    return {"sent": sent, "valid": valid, "landed": landed, "refused": refused,
            "lost": sent - landed - refused, "valid_spans_per_s": round(valid / (end - start))}


def post_all(url: str, key: str, tenant: str) -> Any:
    """Two threads posting pre-encoded bodies, as two exporters would."""
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}",
               "X-AgentLedger-Tenant": tenant}

    def send(payloads: list[bytes]) -> None:
        with httpx.Client(timeout=60, headers=headers) as client, ThreadPoolExecutor(2) as pool:
            for answer in pool.map(lambda body: client.post(f"{url}/v1/traces", content=body),
                                   payloads):
                assert answer.status_code == 200, answer.text
    return send


def produce_all(bootstrap: str, topic: str) -> Any:
    producer = Producer(client_config(bootstrap, "producer"))

    def send(payloads: list[bytes]) -> None:
        for value in payloads:
            producer.produce(topic, value)
            producer.poll(0)
        producer.flush(60)
    return send


def fuzz_main(spans: list, warm: list, share: float, say: Any) -> dict[str, Any]:
    """The --fuzz run: clean then fuzzed, per intake, in one stack."""
    clean, fuzzed, added = fuzz_payloads(spans, share)
    valid = len(spans)
    raw_encode_t0 = time.monotonic()
    encode_spans(spans[:BATCH])
    out: dict[str, Any] = {"mode": "fuzz", "share": share, "poison_kinds": list(POISONS),
                           "raw_sdk_encode_spans_per_s": round(
                               BATCH / (time.monotonic() - raw_encode_t0))}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"),
                      [*default_topics(3), *(TopicSpec(t, 3) for t in (
                          "otlp_spans", "otlp_unused", "otlp_clean", "otlp_fuzz"))])
        settings = Settings(data_dir=Path(tmp) / "data", kafka_bootstrap=broker.bootstrap)
        key = new_key()
        append_entry(settings, entry_for("bench", key, ["http-clean", "http-fuzz"]))
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
               "AGENTLEDGER_OTLP_GRACE_S": "0.5", "PYTHONPATH": str(ROOT)}
        out["raw_kafka_produce_spans_per_s"] = round(raw_produce(broker.bootstrap, clean))
        store = Store(settings, env)
        intakes: list[Intake] = []
        try:
            warm_body = [encode_spans(warm).SerializeToString()]
            # its Kafka loop reads a topic nothing writes: the Kafka phases have their own
            http = Intake(settings, env, "unused", topic="otlp_unused")
            intakes.append(http)
            send = post_all(http.url, key, "http-clean")
            send(warm_body)
            store.wait("http-clean", len(warm) // SPANS_PER_RUN * EVENTS_PER_RUN)
            for name, payloads, sent in (("clean", clean, valid),
                                         ("fuzz", fuzzed, valid + added)):
                say(f"http {name}: {sent} spans → intake /v1/traces ...")
                out[f"http_{name}"] = fuzz_phase(store, post_all(http.url, key, f"http-{name}"),
                                                 f"http-{name}", "otlp.http", payloads, sent,
                                                 valid)
            for name, payloads, sent in (("clean", clean, valid),
                                         ("fuzz", fuzzed, valid + added)):
                # one intake per tenant, as the Kafka intake writes one tenant
                intake = Intake(settings, env, f"kafka-{name}", group=f"intake-{name}",
                                topic=f"otlp_{name}")
                intakes.append(intake)
                produce = produce_all(broker.bootstrap, f"otlp_{name}")
                produce(warm_body)  # the consumer joined and warm before the clock starts
                store.wait(f"kafka-{name}", len(warm) // SPANS_PER_RUN * EVENTS_PER_RUN)
                say(f"kafka {name}: {len(payloads)} messages → otlp_{name} → intake ...")
                out[f"kafka_{name}"] = fuzz_phase(store, produce, f"kafka-{name}",
                                                  f"otlp_{name}", payloads, sent, valid)
                intake.stop()
                intakes.remove(intake)
            out["intakes_alive"] = all(i.proc.poll() is None for i in intakes)
        finally:
            for intake in intakes:
                intake.stop()
            store.stop()
    for path in ("http", "kafka"):
        clean_rate = out[f"{path}_clean"]["valid_spans_per_s"]
        out[f"{path}_fuzz_vs_clean"] = round(out[f"{path}_fuzz"]["valid_spans_per_s"]
                                             / clean_rate, 3) if clean_rate else None
    out["lost"] = sum(out[f"{p}_{n}"]["lost"] for p in ("http", "kafka")
                      for n in ("clean", "fuzz"))
    out["cpus"], out["load_avg_1m"] = os.cpu_count(), round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="agent runs (4 spans each)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--api", action="store_true",
                        help="also post to the ledger API's /v1/traces (the store process)")
    parser.add_argument("--fuzz", action="store_true",
                        help="clean vs poison-mixed streams: every span accounted, 0 lost")
    parser.add_argument("--share", type=float, default=0.1,
                        help="with --fuzz: share of runs that get one poison span")
    args = parser.parse_args()
    say = (lambda *_: None) if args.json else (lambda m: print(m, file=sys.stderr))
    runs = args.runs - args.runs % (BATCH // SPANS_PER_RUN) or BATCH // SPANS_PER_RUN
    say(f"recording {runs + 128} runs with the OpenTelemetry SDK ...")
    spans = record_runs(runs + 128)
    warm, spans = spans[:BATCH], spans[BATCH:]
    if args.fuzz:
        result = fuzz_main(spans, warm, args.share, say)
        say(f"lost {result['lost']}; valid spans/s fuzz vs clean: http "
            f"{result['http_fuzz_vs_clean']}, kafka {result['kafka_fuzz_vs_clean']}")
        print(json.dumps(result))
        return 0 if result["lost"] == 0 else 1
    t0 = time.monotonic()
    payloads = [encode_spans(b).SerializeToString() for b in batches(spans)]
    encode_rate = len(spans) / (time.monotonic() - t0)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"),
                      [*default_topics(3), TopicSpec("otlp_spans", 3)])
        settings = Settings(data_dir=Path(tmp) / "data", kafka_bootstrap=broker.bootstrap)
        key = new_key()
        append_entry(settings, entry_for("bench", key, ["bench-http"]))
        append_entry(settings, entry_for("bench-api", api_key := new_key(), ["bench-api"]))
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
               "AGENTLEDGER_OTLP_GRACE_S": "0.5", "PYTHONPATH": str(ROOT)}
        raw = raw_produce(broker.bootstrap, payloads)
        store = Store(settings, env)
        intake = Intake(settings, env, "bench-kafka")
        broker_pid = broker.process.pid if broker.process else os.getpid()
        try:
            say(f"http: {len(spans)} spans via OTLPSpanExporter → intake /v1/traces ...")
            http, accept, http_cpu = http_phase(store, intake.url, key, "bench-http", spans,
                                                warm, broker_pid, intake.proc.pid)
            say(f"kafka: {len(payloads)} messages → otlp_spans → agentledger intake ...")
            kafka, kafka_cpu = kafka_phase(store, intake, broker.bootstrap, "bench-kafka",
                                           payloads, encode_spans(warm).SerializeToString(),
                                           len(warm), broker_pid)
            api = None
            if args.api:
                say(f"http_api: {len(spans)} spans → the ledger API's /v1/traces ...")
                api = http_phase(store, store.url, api_key, "bench-api", spans, warm,
                                 broker_pid)
        finally:
            intake.stop()
            store.stop()
    result: dict[str, Any] = {
        "spans": len(spans), "events": len(spans) // SPANS_PER_RUN * EVENTS_PER_RUN,
        "spans_per_s": round(min(http, kafka)), "http_spans_per_s": round(http),
        "kafka_spans_per_s": round(kafka), "http_accept_spans_per_s": round(accept),
        "raw_kafka_produce_spans_per_s": round(raw),
        "raw_sdk_encode_spans_per_s": round(encode_rate),
        "http_cpu_s": round(http_cpu, 2), "kafka_cpu_s": round(kafka_cpu, 2),
        "http_api_spans_per_s": round(api[0]) if api else None,
        # CPU-bound capacity of 2 idle cores: 2 / (CPU seconds per span, every process)
        "cpu_bound_2core_spans_per_s": round(2 * len(spans) / max(http_cpu, kafka_cpu)),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    say(f"http {http:,.0f} spans/s, kafka {kafka:,.0f} spans/s (raw produce {raw:,.0f})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
