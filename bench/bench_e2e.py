"""End to end: SDK produce → Kafka → sink (stream worker running, as in ``agentledger up``)
→ queryable, beside the raw baselines of the same run.

    .venv/bin/python bench/bench_e2e.py [--events 1000000] [--fresh-rate 5000]
                                        [--fresh-seconds 60] [--warmup-seconds 5] [--json]

Three phases against one ``agentledger up`` (embedded broker, sink + store API, stream
worker), its processes' RSS sampled every half second:

1. **Freshness** (as in 3), on the new stack;
2. **Throughput**: the simulator produces ``--events`` as fast as the SDK can; events/s is
   events over the time from the first produce until all are queryable (``count() FINAL``);
   the backlog is what was not yet queryable when the producer finished.
3. **Freshness**: ``--fresh-rate`` events/s sustained for ``--fresh-seconds``, after
   ``--warmup-seconds`` at that rate (a new agent's producer needs about 0.5 s to its
   first delivery, and the simulator starts its agents one by one); per event,
   ``ingested_at - ts`` (the SDK stamps ``ts`` when it emits), p50 and p99. Run on the
   new stack (phase 1) and after the throughput phase (``freshness_after_load_*``): the
   embedded broker keeps every record in memory and its fetches slow as topics grow,
   which a Kafka broker's do not.

Raw baselines, same run, same broker: a bare confluent-kafka producer sending the same
number of pre-serialized SDK events, and a bare consumer reading them back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from confluent_kafka import Consumer, Producer

from agentledger.core import discovery
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator

EVENTS_PER_RUN = 9.25


class Stack:
    def __init__(self, data_dir: Path):
        self.settings = Settings(data_dir=data_dir)
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(data_dir)}
        env.pop("AGENTLEDGER_KAFKA_BOOTSTRAP", None)
        self.process = subprocess.Popen([sys.executable, "-m", "agentledger", "up"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "agentledger is up" in line:
                break
        else:
            raise RuntimeError("agentledger up did not start")
        threading.Thread(target=lambda: [None for _ in self.process.stdout or []],
                         daemon=True).start()
        self.bootstrap = discovery.lookup(self.settings, discovery.BROKER_FILE)["bootstrap"]
        self.peaks: dict[str, float] = {}
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        root = psutil.Process(self.process.pid)
        while self._sampling:
            try:
                for proc in [root, *root.children(recursive=True)]:
                    name = _role(proc)
                    rss = proc.memory_info().rss / 2**20
                    self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            except psutil.Error:
                pass
            time.sleep(0.5)  # the sampling period

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of every stack process, and of this one (the
        SDK producing): where a 2-core budget goes, whatever else loads the machine."""
        root = psutil.Process(self.process.pid)
        used = {"sdk": sum(psutil.Process().cpu_times()[:2])}
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that just exited
                used[_role(proc)] = used.get(_role(proc), 0.0) + sum(proc.cpu_times()[:2])
        return used

    def sql(self, sql: str) -> list[list[Any]]:
        info = discovery.lookup(self.settings, discovery.STORE_FILE)
        key = (self.settings.run_dir / "api.key").read_text().strip()
        response = httpx.post(f"{info['api_url']}/v1/sql", json={"sql": sql}, timeout=120,
                              headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()["rows"]

    def landed(self, final: bool = True) -> int:
        """Distinct events queryable (``FINAL``), or rows, which is cheap: read from the
        parts' metadata, where ``FINAL`` merges 1M keys in the measured process."""
        try:
            return int(self.sql(f"SELECT count() FROM events{' FINAL' if final else ''}")[0][0])
        except httpx.HTTPError:
            return -1

    def stop(self) -> None:
        self._sampling = False
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def _role(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    for role in ("sink", "streams", "intake", "up"):
        if f"agentledger {role}" in cmd:
            return role
    return "broker" if "tansu" in cmd else proc.name()


def simulate(bootstrap: str, events: int, rate: float = 0.0, seed: int = 1) -> int:
    runs = max(1, int(events / EVENTS_PER_RUN))
    sim = Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=seed)
    return sim.run(runs, rate=rate / EVENTS_PER_RUN if rate else 0.0).events


def wait_landed(stack: Stack, n: int, timeout_s: float, stuck_s: float = 120) -> float:
    """When ``n`` events are queryable; fails (rather than waiting out ``timeout_s``) once
    the count has not moved for ``stuck_s``: events that never land are the finding."""
    deadline = time.monotonic() + timeout_s
    last, moved_at = -1, time.monotonic()
    # rows first (every 0.2 s), distinct events once there are enough rows
    while (landed := stack.landed(final=False)) < n or (landed := stack.landed()) < n:
        now = time.monotonic()
        if landed != last:
            last, moved_at = landed, now
        if now > deadline or now - moved_at > stuck_s:
            raise TimeoutError(f"only {landed:,} of {n:,} events landed "
                               f"({now - moved_at:.0f}s without progress)")
        time.sleep(0.2)  # polling the store with a deadline
    return time.perf_counter()


def lag_quantiles(stack: Stack, since: str, skip_s: float) -> tuple[float, float]:
    """p50 and p99 of ``ingested_at - ts`` over events made from ``since + skip_s`` on."""
    rows = stack.sql(
        "SELECT quantileExact(0.5)(lag), quantileExact(0.99)(lag) FROM (SELECT "
        "dateDiff('millisecond', ts, ingested_at) / 1000 AS lag FROM events FINAL "
        f"WHERE ingested_at >= toDateTime64('{since}', 3, 'UTC') "
        f"AND ts >= toDateTime64('{since}', 3, 'UTC') + {float(skip_s)})")
    return float(rows[0][0]), float(rows[0][1])


def freshness(stack: Stack, landed_before: int, args: argparse.Namespace, seed: int
              ) -> tuple[int, float, float, float]:
    """``--fresh-rate`` sustained for warm-up plus ``--fresh-seconds``: (events, p50, p99
    after the warm-up, p99 with it)."""
    since = stack.sql("SELECT now64(3)")[0][0]
    seconds = args.warmup_seconds + args.fresh_seconds
    events = simulate(stack.bootstrap, int(args.fresh_rate * seconds), rate=args.fresh_rate,
                      seed=seed)
    wait_landed(stack, landed_before + events, 600)
    p50, p99 = lag_quantiles(stack, since, args.warmup_seconds)
    _, p99_all = lag_quantiles(stack, since, 0.0)
    return events, round(p50, 3), round(p99, 3), round(p99_all, 3)


def raw_baselines(bootstrap: str, n: int) -> tuple[float, float]:
    """Bare produce and consume of ``n`` SDK-sized messages on a topic of their own."""
    captured: list[bytes] = []

    class Capture(Ledger):
        def send(self, event: dict, traceparent: str) -> None:
            captured.append(json.dumps(event).encode())

    Simulator(lambda ident: Capture({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
                                    ident), seed=3).run(300)
    producer = Producer(client_config(bootstrap, "producer"))
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce("bench.raw", captured[i % len(captured)], str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush()
    produce_s = time.perf_counter() - t0
    consumer = Consumer(client_config(bootstrap, "consumer", group_id="bench-raw"))
    consumer.subscribe(["bench.raw"])
    got, t0 = 0, None
    while got < n:
        batch = consumer.consume(10_000, timeout=1)
        if batch and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in batch if not m.error())
    consume_s = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return n / produce_s, n / max(consume_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh-rate", type=float, default=5_000)
    parser.add_argument("--fresh-seconds", type=float, default=60)
    parser.add_argument("--warmup-seconds", type=float, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "data")
        try:
            fresh = freshness(stack, 0, args, seed=2)
            cpu_before = stack.cpu_seconds()
            t0 = time.perf_counter()
            produced = simulate(stack.bootstrap, args.events)
            produced_at = time.perf_counter()
            backlog = produced - max(0, stack.landed())
            done = wait_landed(stack, fresh[0] + produced, max(600.0, produced / 500))
            rate = produced / (done - t0)
            cpu = {role: round((used - cpu_before.get(role, 0.0)) / produced * 1e6, 1)
                   for role, used in stack.cpu_seconds().items()}
            again = freshness(stack, fresh[0] + produced, args, seed=4)
            raw_produce, raw_consume = raw_baselines(stack.bootstrap, min(produced, 500_000))
        finally:
            stack.stop()
    report = {
        "events": produced, "events_per_s": round(rate),
        "producer_seconds": round(produced_at - t0, 1), "backlog_at_producer_end": backlog,
        "freshness_rate": args.fresh_rate, "freshness_events": fresh[0],
        "freshness_p50_s": fresh[1], "freshness_p99_s": fresh[2],
        "freshness_warmup_s": args.warmup_seconds,
        "freshness_p99_with_warmup_s": fresh[3],
        "freshness_after_load_p50_s": again[1], "freshness_after_load_p99_s": again[2],
        "cpu_us_per_event": cpu,
        # what two idle cores could reach if CPU were the only limit
        "cpu_bound_2core_events_per_s": round(2e6 / sum(cpu.values())),
        "peak_rss_mib": {k: round(v) for k, v in sorted(stack.peaks.items())},
        "raw_produce_per_s": round(raw_produce), "raw_consume_per_s": round(raw_consume),
    }
    print(f"events end to end:     {produced:,} in {done - t0:.1f}s = {rate:,.0f} events/s "
          f"(goal >= 20,000)")
    print(f"backlog at producer end: {backlog:,} events ({produced_at - t0:.1f}s producing)")
    print(f"freshness at {args.fresh_rate:,.0f}/s: p50 {report['freshness_p50_s']}s, "
          f"p99 {report['freshness_p99_s']}s (goal p99 <= 2); p99 with the first "
          f"{args.warmup_seconds:g}s: {report['freshness_p99_with_warmup_s']}s")
    print(f"  again after the {produced:,} events: p50 {report['freshness_after_load_p50_s']}s, "
          f"p99 {report['freshness_after_load_p99_s']}s (the embedded broker keeps every "
          "record in memory and slows as topics grow)")
    print(f"CPU µs per event:      {cpu} → 2 idle cores could reach "
          f"{report['cpu_bound_2core_events_per_s']:,} events/s")
    print(f"peak RSS (MiB):        {report['peak_rss_mib']}")
    print(f"raw produce / consume: {raw_produce:,.0f} / {raw_consume:,.0f} messages/s")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
