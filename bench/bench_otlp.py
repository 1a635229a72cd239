"""OTel intake rate: spans/s from the OpenTelemetry SDK's exporter to queryable ledger events.

    .venv/bin/python bench/bench_otlp.py [--runs 5000] [--json]

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
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentledger.auth import append_entry, entry_for, new_key  # noqa: E402
from agentledger.broker import EmbeddedBroker  # noqa: E402
from agentledger.core import discovery  # noqa: E402
from agentledger.core.kafka import TopicSpec, client_config, default_topics, ensure_topics  # noqa: E402
from agentledger.core.settings import Settings  # noqa: E402
from tests.otlputil import agent_run  # noqa: E402

BATCH = 512
EVENTS_PER_RUN = 6
SPANS_PER_RUN = 4


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

    def __init__(self, settings: Settings, env: dict[str, str], tenant: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentledger", "intake", "--tenant", tenant,
             "--grace-s", "0.5"], env={**env, "AGENTLEDGER_OTLP_HTTP_PORT": "0"},
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="agent runs (4 spans each)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--api", action="store_true",
                        help="also post to the ledger API's /v1/traces (the store process)")
    args = parser.parse_args()
    say = (lambda *_: None) if args.json else (lambda m: print(m, file=sys.stderr))
    runs = args.runs - args.runs % (BATCH // SPANS_PER_RUN) or BATCH // SPANS_PER_RUN
    say(f"recording {runs + 128} runs with the OpenTelemetry SDK ...")
    spans = record_runs(runs + 128)
    warm, spans = spans[:BATCH], spans[BATCH:]
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
