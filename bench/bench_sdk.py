"""SDK emit rate vs raw confluent-kafka produce of the same bytes, in one run.

    .venv/bin/python bench/bench_sdk.py [--runs 5000]

Each simulated run is 8 events (run.started, model.call, retrieval, 2 x tool.call/result,
run.finished) with OTel spans, hash chain, redaction and body validation — the SDK's real
per-event work. The baseline produces the identical payloads with a bare Producer.
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Producer

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.producers.emitter import AgentIdentity, Ledger


class Recording(Ledger):
    def send(self, event, traceparent):
        self.payloads.append(event)
        super().send(event, traceparent)


def sdk_runs(ledger: Ledger, runs: int) -> None:
    for n in range(runs):
        with ledger.run("ticket_triage", inputs={"n": n}, max_cost_usd=1.0) as run:
            run.model_call(provider="openai", model="gpt-4o", model_version="x", role="planner",
                           tokens_in=1200, tokens_out=300, latency_ms=420.0)
            run.retrieval(source="kb", index_version="v3", documents={"d1": "a", "d2": "b"})
            for i in range(2):
                with run.tool_call("zendesk", "update", mode="write",
                                   args={"id": n, "i": i, "password": "x"}) as call:
                    call.result("ok", latency_ms=12.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    ident = AgentIdentity("acme", "triage-bot", "1.0.0", "svc-triage")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        ledger = Recording(client_config(broker.bootstrap, "producer"), ident)
        ledger.payloads = []
        sdk_runs(ledger, 200)  # warm up connections and the tracer
        ledger.flush()
        ledger.payloads.clear()
        t0 = time.perf_counter()
        sdk_runs(ledger, args.runs)
        ledger.flush()
        sdk_s = time.perf_counter() - t0
        events = len(ledger.payloads)

        import orjson

        payloads = [(orjson.dumps(e), e["run_id"].encode()) for e in ledger.payloads]
        raw = Producer(client_config(broker.bootstrap, "producer"))
        t0 = time.perf_counter()
        for value, key in payloads:
            while True:
                try:
                    raw.produce("agent.events", value, key)
                    break
                except BufferError:
                    raw.poll(0.01)
            raw.poll(0)
        raw.flush()
        raw_s = time.perf_counter() - t0
    avg = sum(len(v) for v, _ in payloads) / len(payloads)
    sdk_rate, raw_rate = events / sdk_s, events / raw_s
    print(f"events: {events} (avg {avg:.0f} bytes)")
    print(f"sdk emit:            {sdk_rate:12,.0f} events/s (one thread, delivery awaited)")
    print(f"raw produce (same):  {raw_rate:12,.0f} events/s")
    print(f"ratio sdk/raw:       {sdk_rate / raw_rate:12.1%}  (goal >= 25%)")
    if args.json:
        print(json.dumps({"events": events, "sdk_events_per_s": round(sdk_rate),
                          "raw_produce_per_s": round(raw_rate),
                          "ratio_to_raw_produce": round(sdk_rate / raw_rate, 3)}))


if __name__ == "__main__":
    main()
