"""A stream worker that falls behind is reported, by how much, and cleared once it catches up.

Real broker, real `agentledger sink` (which measures the workers' committed offsets
against the end of agent.events) and a real `agentledger streams` worker, paused with
SIGSTOP while events keep arriving.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.simulator import Simulator
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinks.test_crash import start_sink
from tests.streamutil import StreamWorker

pytestmark = pytest.mark.integration
MAX_LAG = 50


def _report(env: dict[str, str]) -> tuple[int, dict]:
    done = subprocess.run([*CLI, "health", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, json.loads(done.stdout)


def _health(env: dict[str, str]) -> tuple[int, list[str]]:
    code, report = _report(env)
    return code, report.get("problems", [])


def _measured_and_healthy(env: dict[str, str]) -> bool:
    """Healthy, with the worker's lag measured (it has committed offsets to measure)."""
    code, report = _report(env)
    return (code, report.get("problems")) == (0, []) and any(
        c["component"] == "streams-lag" for c in report.get("components", []))


def _behind(env: dict[str, str]) -> tuple[int, list[str]] | None:
    """The health report once it says how many events the stream worker is behind."""
    code, problems = _health(env)
    return (code, problems) if any("events behind" in p for p in problems) else None


def test_paused_worker_is_reported_behind_then_caught_up(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    env = {**service_env, "AGENTLEDGER_SINK_STATUS_SECONDS": "0.5",
           "AGENTLEDGER_HEALTH_STREAMS_MAX_LAG": str(MAX_LAG)}
    bootstrap = settings.kafka_bootstrap or ""
    sim = Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=21, error_rate=0.0)
    sink = start_sink(env)
    try:
        with StreamWorker(env, tmp_path / "worker.log") as worker, \
                ControlFollower(bootstrap) as follower:
            worker.wait_ready(follower)
            sim.run(20, rate=0)
            wait_for(lambda: _measured_and_healthy(env), 90,
                     what="a healthy, caught-up pipeline whose lag is measured")

            assert worker.proc is not None
            os.kill(worker.proc.pid, signal.SIGSTOP)
            try:
                produced = sim.run(60, rate=0).events
                assert produced > MAX_LAG
                code, problems = wait_for(lambda: _behind(env), 60,
                                          what="health to say the stream worker is behind")
                assert code == 2, problems
                (line,) = [p for p in problems if "events behind" in p]
                behind = int(re.search(r"([\d,]+) events behind", line).group(1)
                             .replace(",", ""))
                assert MAX_LAG < behind <= produced, line
            finally:
                os.kill(worker.proc.pid, signal.SIGCONT)

            wait_for(lambda: _health(env) == (0, []), 90, what="health to clear after SIGCONT")
            beat = follower.heartbeats[worker.worker_scope]
            assert beat.details["events"] >= produced
            assert isinstance(beat.details["lag_s"], float)
    finally:
        sink.terminate()
        sink.wait(30)


def test_offsets_the_consumer_skipped_are_counted(settings: Settings) -> None:
    from agentledger.streams.app import ControlLoop
    from agentledger.streams.control_policy import load_policy

    loop = ControlLoop(settings, "127.0.0.1:9", load_policy(), worker_id="unit")
    for partition, offset in ((0, 5), (0, 6), (1, 0), (0, 9), (0, 3), (1, 1)):
        loop._check_contiguous(partition, offset)  # 7, 8 never seen; 3 is a re-delivery
    assert loop.stats["offset_gaps"] == 2
