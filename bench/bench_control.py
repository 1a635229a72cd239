"""Control loop: time to safe mode, stream throughput vs raw consume, worker RSS.

    .venv/bin/python bench/bench_control.py [--trials 60] [--runs 100000]

1. Time to safe mode: for each trial a fresh agent gets 20 ok tool results and k - 1
   failures, all decided, k being the fewest failures the policy's significance test
   needs at 20 + k calls (8: 7 of 27 is not yet evidence of > 5%); then the clock starts,
   the k-th failure is produced and flushed, and the clock stops when that agent's
   ``SafeModeGuard.decide(tool, "write")`` flips to a refusal. p50/p99 over the trials.
2. Throughput: ``--runs`` runs x 4 events (run.started with a budget, tool.call,
   tool.result, model.call; no run.finished, so every run stays in flight) over 10 tenants
   x 100 tools = 1,000 (tenant, tool) breakers, produced before the worker starts. A fresh
   `agentledger streams` process folds them; rate = events / time from its first to its
   last progress heartbeat. Baseline in the same run: a bare confluent-kafka consumer
   reading the same topic.
3. Worker RSS (psutil, the child process) once it has folded everything.
4. The framework's ceiling: ``bench/faust_ceiling.py``, a faust worker with the same settings
   and batching whose agent only counts, reads the same topic. The worker's rate is printed
   beside it and beside raw consume: what is left above the ceiling is ours to make fast.
5. Under load: a background fleet (``--load-rate`` events/s of healthy traffic from its
   own tenant) runs for at least ``--load-seconds`` with the sink (``agentledger sink``)
   and one worker on the same machine. Meanwhile ``--load-trials`` time-to-safe-mode
   trials run as in 1., and the worker's lag in seconds (wall time minus the event time
   of its newest heartbeat; background events are stamped when produced) is sampled
   twice a second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime

import orjson
import psutil
from confluent_kafka import Consumer, Producer
from faust_ceiling import ceiling as faust_ceiling

from agentledger.broker import EmbeddedBroker
from agentledger.core.ids import format_ts, uuid7
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas import topics


def _event(etype: str, tenant: str, agent: str, run_id: str, seq: int, body: dict) -> bytes:
    return orjson.dumps({
        "schema_version": 1, "event_id": uuid7(), "event_type": etype,
        "ts": format_ts(datetime.now(UTC)), "trace_id": uuid.uuid4().hex,
        "span_id": uuid.uuid4().hex[:16], "parent_span_id": None, "run_id": run_id,
        "seq": seq, "tenant": tenant, "workspace": "default", "agent": agent,
        "agent_version": "1", "principal": "svc", "on_behalf_of": None, "env": "bench",
        "prev_hash": "0" * 64, "hash": "0" * 64, "sig": None, "body": body})


def _produce(producer: Producer, payload: bytes, key: bytes) -> None:
    """Produce to agent.events, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topics.EVENTS, payload, key)
            return
        except BufferError:
            producer.poll(0.05)


def produce_fleet(bootstrap: str, runs: int) -> int:
    producer = Producer(client_config(bootstrap, "producer"))
    n = 0
    for i in range(runs):
        tenant, tool, run_id = f"t{i % 10}", f"tool{(i // 10) % 100}", uuid7()
        for seq, (etype, body) in enumerate((
                ("run.started", {"workflow": "bench", "budget": {"max_cost_usd": 1.0,
                                                                 "max_tool_calls": 10}}),
                ("tool.call", {"tool": tool, "action": "get", "mode": "read"}),
                ("tool.result", {"tool": tool, "status": "ok", "latency_ms": 12.5}),
                ("model.call", {"model": "gpt-4o-mini", "cost_usd": 0.0012}))):
            payload = _event(etype, tenant, "agent", run_id, seq, body)
            _produce(producer, payload, run_id.encode())
            n += 1
    producer.flush(60)
    return n


def raw_consume(bootstrap: str, expected: int) -> float:
    consumer = Consumer(client_config(bootstrap, "consumer", group_id=f"raw-{uuid.uuid4()}"))
    consumer.subscribe([topics.EVENTS])
    got, start = 0, None
    while got < expected:
        batch = consumer.consume(5000, timeout=1)
        if batch and start is None:
            start = time.perf_counter()
        got += sum(1 for m in batch if not m.error())
    rate = got / (time.perf_counter() - (start or time.perf_counter()))
    consumer.close()
    return rate


def start_worker(bootstrap: str, data_dir: str, group: str) -> subprocess.Popen:
    env = dict(os.environ, AGENTLEDGER_KAFKA_BOOTSTRAP=bootstrap, AGENTLEDGER_DATA_DIR=data_dir,
               AGENTLEDGER_STREAMS_GROUP=group)
    return subprocess.Popen([sys.executable, "-m", "agentledger", "streams"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _crossing_failures(ok: int = 20) -> int:
    """Fewest failures after ``ok`` passes that the default safe-mode rule acts on."""
    from agentledger.streams.control_policy import load_policy
    from agentledger.streams.stats import critical_failures

    when = load_policy().safe_mode[0].when
    return next(k for k in range(1, 1000) if k >= critical_failures(
        ok + k, when.tool_error_rate_gt, when.alpha))


def time_to_safe_mode(bootstrap: str, follower: ControlFollower, trials: int,
                      timeout_s: float = 30, prefix: str = "agent") -> list[float]:
    """Seconds from the crossing failure to the guard's refusal, per trial; a trial that
    times out counts as ``timeout_s`` (the figure is then a lower bound)."""
    latencies = []
    crossing = _crossing_failures()
    for trial in range(trials):
        ident = AgentIdentity(tenant="bench", agent=f"{prefix}-{trial}", agent_version="1",
                              principal="svc")
        guard = SafeModeGuard(follower, "bench", ident.agent, stale_after_s=3600)
        with Ledger.connect(bootstrap, ident) as ledger, ledger.run("bench") as run:
            def result(status: str, tool: str = f"tool-{trial}") -> None:
                with run.tool_call(tool, "get", mode="read", args={}) as call:
                    call.result(status, latency_ms=5.0,
                                error_type="HTTP500" if status == "error" else None)
            for _ in range(20):
                result("ok")
            last = time.time()  # the next event's ts is at least this
            for _ in range(crossing - 1):
                result("error")
            ledger.flush()
            follower.wait_for(lambda t=last: follower.event_time >= t, timeout_s)
            assert guard.decide("x", "write").allowed
            start = time.perf_counter()
            result("error")
            ledger.flush()
            while guard.decide("x", "write").allowed:
                time.sleep(0.0005)
                if time.perf_counter() - start > timeout_s:
                    break
            latencies.append(min(time.perf_counter() - start, timeout_s))
    return latencies


class BackgroundFleet(threading.Thread):
    """Healthy tool traffic from tenant ``load`` at ``rate`` events/s, stamped now."""

    def __init__(self, bootstrap: str, rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.rate, self.sent = bootstrap, rate, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        producer = Producer(client_config(self.bootstrap, "producer"))
        start = time.perf_counter()
        i = 0
        while not self.stopping.is_set():
            due = int((time.perf_counter() - start) * self.rate)
            while self.sent < due:
                run_id, tool = uuid7(), f"tool{i % 50}"
                for seq, (etype, body) in enumerate((
                        ("tool.call", {"tool": tool, "action": "get", "mode": "read"}),
                        ("tool.result", {"tool": tool, "status": "ok", "latency_ms": 9.0}))):
                    payload = _event(etype, "load", f"agent{i % 20}", run_id, seq, body)
                    _produce(producer, payload, run_id.encode())
                    self.sent += 1
                i += 1
            producer.poll(0)
            time.sleep(0.005)
        producer.flush(30)


def start_sink(bootstrap: str, data_dir: str) -> subprocess.Popen:
    env = dict(os.environ, AGENTLEDGER_KAFKA_BOOTSTRAP=bootstrap, AGENTLEDGER_DATA_DIR=data_dir)
    return subprocess.Popen([sys.executable, "-m", "agentledger", "sink"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def under_load(bootstrap: str, data_dir: str, rate: float, seconds: float,
               trials: int) -> tuple[list[float], list[float], float]:
    """(safe-mode latencies, lag samples in s, achieved background rate) under load."""
    sink = start_sink(bootstrap, os.path.join(data_dir, "sink"))
    worker = start_worker(bootstrap, data_dir, "bench-load")
    fleet = BackgroundFleet(bootstrap, rate)
    lags: list[float] = []
    try:
        with ControlFollower(bootstrap) as follower:
            assert follower.wait_for(lambda: any(
                h.scope.endswith(f"-{worker.pid}") for h in follower.heartbeats.values()),
                90), "no worker"
            fleet.start()
            started = time.perf_counter()
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.5):
                    beat = [h for h in follower.heartbeats.values()
                            if h.scope.endswith(f"-{worker.pid}")]
                    if beat and beat[0].details.get("event_time"):
                        lags.append(max(0.0, time.time() - beat[0].details["event_time"]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(5)  # let the load settle before the first trial
            latencies = time_to_safe_mode(bootstrap, follower, trials, timeout_s=60,
                                          prefix="loaded")
            while time.perf_counter() - started < seconds:
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            fleet.stopping.set()
            sampling.set()
            sampler.join()
    finally:
        fleet.stopping.set()
        for proc in (worker, sink):
            proc.terminate()
            proc.wait(30)
    return latencies, lags, fleet.sent / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--load-rate", type=float, default=10_000)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--load-trials", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap
        ensure_topics(client_config(bootstrap, "admin"), default_topics(3))

        # 1. time to safe mode, one worker, idle otherwise
        worker = start_worker(bootstrap, tmp, "bench-latency")
        with ControlFollower(bootstrap) as follower:
            assert follower.wait_for(lambda: bool(follower.heartbeats), 90), "no worker"
            lat = time_to_safe_mode(bootstrap, follower, args.trials)
        worker.terminate()
        worker.wait(30)
        print(f"time to safe mode over {len(lat)} trials: p50 {pct(lat, .5) * 1000:.0f} ms, "
              f"p99 {pct(lat, .99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, "
              f"mean {statistics.mean(lat) * 1000:.0f} ms (goal p99 <= 1000 ms)")

        # 2./3. throughput and RSS on a fresh topic's worth of in-flight runs
        before = produce_fleet(bootstrap, args.runs)
        total = before + 0
        raw = raw_consume(bootstrap, total)
        worker = start_worker(bootstrap, tmp, "bench-throughput")
        proc = psutil.Process(worker.pid)
        peak = 0
        first = last = None
        with ControlFollower(bootstrap) as follower:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                beats = [h for h in follower.heartbeats.values()
                         if h.details.get("events", 0) > 0 and
                         h.scope.endswith(f"-{worker.pid}")]
                peak = max(peak, proc.memory_info().rss)
                if beats:
                    done = beats[0].details["events"]
                    now = time.perf_counter()
                    first = first or (now, done)
                    if done >= total:
                        last = (now, done)
                        break
                time.sleep(0.05)
        worker.terminate()
        worker.wait(30)
        assert first and last, "the worker did not fold everything"
        rate = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
        print(f"stream worker: {total:,} events ({args.runs:,} runs in flight, 1,000 "
              f"tenant/tool breakers) at {rate:,.0f} events/s; raw consume {raw:,.0f} msg/s "
              f"({rate / raw:.1%}); goal >= 20,000 events/s per worker")
        print(f"stream worker peak RSS: {peak / 2**20:,.0f} MiB")
        ceiling = faust_ceiling(bootstrap, total)
        print(f"faust alone (agent that only counts): {ceiling:,.0f} events/s; the worker "
              f"runs at {rate / ceiling:.1%} of it")

    # 5. under load, with the sink beside it, on a broker of its own (an empty topic)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        loaded, lags, load_rate = under_load(broker.bootstrap, tmp, args.load_rate,
                                             args.load_seconds, args.load_trials)
        print(f"under load ({load_rate:,.0f} events/s background, sink running): time to safe "
              f"mode p50 {pct(loaded, .5) * 1000:,.0f} ms, p99 {pct(loaded, .99) * 1000:,.0f} "
              f"ms (goal <= 1,000); worker lag p99 {pct(lags, .99):.1f} s, max "
              f"{max(lags):.1f} s (goal p99 <= 1 s)")
    if args.json:
        print(json.dumps({
            "safe_mode_p50_ms": round(pct(lat, .5) * 1000), "safe_mode_p99_ms": round(
                pct(lat, .99) * 1000), "events_per_s_per_worker": round(rate),
            "raw_consume_per_s": round(raw), "ratio_to_raw_consume": round(rate / raw, 4),
            "rss_mib": round(peak / 2**20), "runs_in_flight": args.runs,
            "faust_noop_per_s": round(ceiling), "ratio_to_faust_noop": round(rate / ceiling, 4),
            "safe_mode_p99_ms_under_load": round(pct(loaded, .99) * 1000),
            "lag_p99_s_under_load": round(pct(lags, .99), 2),
            "background_events_per_s": round(load_rate)}))


if __name__ == "__main__":
    main()
