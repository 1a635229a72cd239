"""Run the pipeline under faults and count: nothing lost, nothing doubled, every bad
message accounted for once.

The driver starts a Tansu broker, ``agentledger sink`` (which serves the store API) and
``agentledger streams`` as processes of its own, produces simulated agent traffic through
the SDK with fuzzed bad messages mixed in, and meanwhile ``kill -9``s and restarts the sink
and the stream worker and pauses them (SIGSTOP … SIGCONT) at seeded random moments.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from agentledger.supervisor import die_with_parent
from tests.chaos.badinput import bad_messages
from tests.helpers import wait_for

EVENTS_PER_RUN = 9.25  # what the simulator's workflows average; only sizes the plan


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 1_000_000
    events_per_s: float = 10_000
    sink_kills: int = 10
    streams_kills: int = 10
    pauses: int = 2
    pause_s: float = 20.0
    bad: int = 1_000
    seed: int = 0


@dataclass
class Service:
    """One pipeline process the driver owns, restarts and hurts."""

    name: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    faults: list[str] = field(default_factory=list)

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "agentledger", self.name],
                                        env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        preexec_fn=die_with_parent())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.faults.append("kill -9")
        self.start()

    def pause(self, seconds: float) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)  # the fault itself: the process is frozen this long
        self.process.send_signal(signal.SIGCONT)
        self.faults.append(f"SIGSTOP {seconds:g}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Chaos:
    def __init__(self, plan: ChaosPlan, workdir: Path, say: Any = print):
        self.plan = plan
        self.workdir = workdir
        self.say = say
        self.rnd = random.Random(plan.seed)

    def run(self) -> dict[str, Any]:
        with EmbeddedBroker(log_file=None) as broker:
            ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
            self.settings = Settings(data_dir=self.workdir / "data",
                                     kafka_bootstrap=broker.bootstrap)
            env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(self.settings.data_dir),
                   "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
                   "AGENTLEDGER_SINK_BATCH_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"}
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.sink = Service("sink", env, log=self.workdir / "sink.log")
            self.streams = Service("streams", env, log=self.workdir / "streams.log")
            try:
                return self._run(broker.bootstrap)
            finally:
                self.streams.stop()
                self.sink.stop()

    def _run(self, bootstrap: str) -> dict[str, Any]:
        plan = self.plan
        self.sink.start()
        self.streams.start()
        self._wait(lambda: self.scalar("SELECT 1") == 1, 120, "the sink's store API")
        duration = plan.events / plan.events_per_s
        produced: list[int] = []
        producer = threading.Thread(target=lambda: produced.append(
            self._produce(bootstrap, duration)), daemon=True)
        bad = threading.Thread(target=self._produce_bad, args=(bootstrap, duration),
                               daemon=True)
        started = time.monotonic()
        producer.start()
        bad.start()
        self._inject_faults(duration)
        producer.join()
        bad.join()
        self.say(f"produced {produced[0]:,} events in {time.monotonic() - started:.0f}s; "
                 "waiting for the sink to land them")
        n = produced[0]
        self._wait(lambda: self.scalar("SELECT count() FROM events FINAL") >= n
                   and self.scalar("SELECT count() FROM rejected_events FINAL") >= plan.bad,
                   max(300.0, n / 1000), "every event and every bad message to land")
        return self._account(n)

    def _produce(self, bootstrap: str, duration: float) -> int:
        runs = max(1, int(self.plan.events / EVENTS_PER_RUN))
        sim = Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=self.plan.seed)
        return sim.run(runs, rate=runs / duration).events

    def _produce_bad(self, bootstrap: str, duration: float) -> None:
        producer = Producer(client_config(bootstrap, "producer",
                                          **{"message.max.bytes": 8 << 20}))
        gap = duration / max(1, self.plan.bad)
        for _kind, key, value in bad_messages(self.plan.bad, self.plan.seed):
            producer.produce(topics.EVENTS, value or None, key or None)
            producer.poll(0)
            time.sleep(gap)  # spread over the run, between the good events
        assert producer.flush(60) == 0, "the broker must accept every bad message"

    def _inject_faults(self, duration: float) -> None:
        plan = self.plan
        faults = ([(self.sink, "kill")] * plan.sink_kills
                  + [(self.streams, "kill")] * plan.streams_kills
                  + [(self.rnd.choice([self.sink, self.streams]), "pause")] * plan.pauses)
        moments = sorted(self.rnd.uniform(0.05, 0.95) * duration for _ in faults)
        self.rnd.shuffle(faults)
        start = time.monotonic()
        for at, (service, action) in zip(moments, faults, strict=True):
            wait = start + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the schedule: faults land at their seeded moments
            if action == "kill":
                service.kill()
            else:
                service.pause(plan.pause_s)

    def _account(self, produced: int) -> dict[str, Any]:
        count, distinct = (self.scalar("SELECT count() FROM events FINAL"),
                           self.scalar("SELECT uniqExact(event_id) FROM events"))
        by_type = self.scalar("SELECT sum(n) FROM (SELECT event_type, count() AS n "
                              "FROM events FINAL GROUP BY event_type)")
        runs = self.scalar("SELECT uniqExact(run_id) FROM events")
        summaries = self.scalar("SELECT count() FROM (SELECT run_id FROM run_summaries "
                                "GROUP BY tenant, run_id)")
        rejected = self.scalar("SELECT count() FROM rejected_events FINAL")
        missing = self.missing_offsets() if produced != distinct else []
        return {
            "missing_offsets": missing,
            "faults": {"sink": self.sink.faults, "streams": self.streams.faults},
            "faults_injected": len(self.sink.faults) + len(self.streams.faults),
            "events_produced": produced, "events_landed": count,
            "events_distinct": distinct, "events_lost": produced - distinct,
            "duplicates_visible": count - distinct, "events_by_type_total": by_type,
            "runs": runs, "run_summaries": summaries,
            "bad_messages": self.plan.bad, "bad_accounted": rejected,
        }

    def missing_offsets(self) -> list[list[int]]:
        """[partition, first, last] of every run of agent.events offsets that is neither an
        event nor a rejected message: where a loss happened, for diagnosis."""
        return self.rows(
            "SELECT p, prev + 1, o - 1 FROM (SELECT p, o, lagInFrame(o, 1, -1) OVER "
            "(PARTITION BY p ORDER BY o ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev "
            "FROM (SELECT toInt64(kafka_partition) AS p, toInt64(kafka_offset) AS o FROM events "
            "UNION DISTINCT SELECT toInt64(partition), toInt64(offset) FROM rejected_events "
            "WHERE topic = 'agent.events')) WHERE o > prev + 1 ORDER BY p, o LIMIT 1000")

    def rows(self, sql: str) -> list[list[Any]]:
        info = discovery.lookup(self.settings, discovery.STORE_FILE)
        assert info, "the sink's store API is not up"
        key = (self.settings.run_dir / "api.key").read_text().strip()
        response = httpx.post(f"{info['api_url']}/v1/sql", timeout=120, json={"sql": sql},
                              headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()["rows"]

    def scalar(self, sql: str) -> int:
        info = discovery.lookup(self.settings, discovery.STORE_FILE)
        if not info:
            return -1
        try:
            key = (self.settings.run_dir / "api.key").read_text().strip()
            response = httpx.post(f"{info['api_url']}/v1/sql", timeout=30, json={"sql": sql},
                                  headers={"Authorization": f"Bearer {key}"})
        except (httpx.HTTPError, OSError):
            return -1
        return int(response.json()["rows"][0][0]) if response.status_code == 200 else -1

    @staticmethod
    def _wait(condition: Any, timeout_s: float, what: str) -> None:
        wait_for(condition, timeout_s=timeout_s, interval_s=0.5, what=what)  # polls the store API
