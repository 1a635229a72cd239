"""The SDK's on-disk spool: events survive a broker outage and an agent restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentledger.broker import EmbeddedBroker, free_port
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.spool import Spool, SpoolFull
from tests.sinkutil import query, run_sink


def test_spool_replays_unacknowledged_records_and_drops_acknowledged_segments(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100)  # two records a segment
    first = [spool.append(b"run-1", b'{"n": %d}' % i, [("h", "v")]) for i in range(6)]
    assert len(set(first)) > 1, "small segments roll over"
    for segment in first[:3]:
        spool.ack(segment)
    spool.close()
    again = Spool(tmp_path)
    replayed = list(again.replay())
    # whole segments come back (acknowledged records of a live segment included)
    assert [v for _, _, v, _ in replayed] == [b'{"n": %d}' % i for i in (2, 3, 4, 5)]
    assert all(h == [("h", "v")] for *_, h in replayed)
    for segment, *_ in replayed:
        again.ack(segment)
    assert not list(tmp_path.glob("segment-*.log")), "acknowledged segments are deleted"


def test_a_torn_record_is_ignored_and_the_spool_is_bounded(tmp_path):
    spool = Spool(tmp_path, max_bytes=200)
    appended = 0
    with pytest.raises(SpoolFull, match="is full"):
        for _ in range(10):
            spool.append(b"k", b"x" * 50, [])
            appended += 1
    assert appended == 2  # 69-byte records under a 200-byte bound
    spool.close()
    segment = next(tmp_path.glob("segment-*.log"))
    segment.write_bytes(segment.read_bytes() + b"\x40\x00\x00\x00garbage")  # a torn write
    assert len(list(Spool(tmp_path).replay())) == appended


@pytest.mark.integration
def test_broker_down_agent_killed_and_restarted_all_10000_land_exactly_once(tmp_path: Path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    spool_dir = tmp_path / "spool"
    agent = [sys.executable, "-m", "tests.spool_agent"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emitting = subprocess.Popen([*agent, "emit", bootstrap, str(spool_dir), "10000"], env=env,
                                stdout=subprocess.PIPE, text=True)
    assert emitting.stdout is not None
    assert emitting.stdout.readline().strip() == "spooled 10000"  # no broker is listening
    os.kill(emitting.pid, signal.SIGKILL)
    emitting.wait(10)
    assert list(spool_dir.glob("segment-*.log"))

    with EmbeddedBroker(port) as broker:  # the broker comes back on the same address
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        resumed = subprocess.run([*agent, "resume", bootstrap, str(spool_dir)], env=env,
                                 capture_output=True, text=True, timeout=180)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == "delivered 10000"
        assert not list(spool_dir.glob("segment-*.log")), "acknowledged: nothing left spooled"
        settings = Settings(data_dir=tmp_path / "data", kafka_bootstrap=bootstrap,
                            sink_batch_seconds=0.3)
        run_sink(settings, 10000, timeout_s=120)
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL") == [
        (10000, 10000)]
