"""``kill -9`` of the sink mid-stream loses nothing and shows no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinkutil import api_scalar, query, summary_rows

pytestmark = pytest.mark.integration


def api_count(settings: Settings) -> int:
    """Events in the store, through the API of the process that owns it (-1 if none)."""
    return api_scalar(settings, "SELECT count() FROM events FINAL")


def start_sink(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "sink"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_kill_9_mid_stream_then_restart_lands_exactly_n(settings, service_env):
    env = {**service_env, "AGENTLEDGER_SINK_BATCH_ROWS": "500"}
    sim = Simulator(lambda ident: Ledger.connect(settings.kafka_bootstrap, ident), seed=3)
    produced: list[int] = []
    producer = threading.Thread(target=lambda: produced.append(
        sim.run(2000, rate=200).events))  # ~10 s of traffic, so the kill lands mid-stream
    sink = start_sink(env)
    try:
        wait_for(lambda: api_count(settings) >= 0, 60, what="the sink's store API")
        producer.start()
        wait_for(lambda: api_count(settings) >= 1500, 60, what="first batches to land")
        assert producer.is_alive(), "the kill must happen while events are still arriving"
        os.kill(sink.pid, signal.SIGKILL)
        assert sink.wait(10) == -signal.SIGKILL
        producer.join(60)
        n = produced[0]
        sink = start_sink(env)  # the store lock died with the process; restart takes it
        wait_for(lambda: api_count(settings) == n, 90, what=f"all {n} events after restart")
        sink.send_signal(signal.SIGTERM)
        output = sink.communicate(timeout=60)[0].decode()
        assert sink.returncode == 0, output
    finally:
        if sink.poll() is None:
            sink.kill()
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL") == [(n, n)]
    events_by_type = summary_rows(settings)["events by type"]
    assert sum(row[1] for row in events_by_type) == n
    client_config(settings.kafka_bootstrap, "admin")  # broker still up: nothing else died
