"""Finding 10 (first half): 1,000 control streams on one key were accepted, each with an
unbounded queue. Now one key holds at most ``control_streams_per_key`` streams (one more
is a 429 naming the cap), each stream's queue is bounded, and a client that stops reading
is dropped with a last ``event: close`` it can read, while the others keep receiving.

Real Tansu broker, real API on loopback. The slow client is a raw socket with a small
receive buffer that stops reading after ``ready``; signals are produced in batches, each
waited for on the reading client (no sleeps), until the hub reports the drop."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest
from confluent_kafka import Producer

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal
from agentledger.services import ApiServer, open_store, start_api
from tests.helpers import wait_for

CAP = 2
QUEUE = 64
BATCH = 40


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[ApiServer, str]]:
    capped = settings.model_copy(update={"control_streams_per_key": CAP,
                                         "control_stream_queue": QUEUE})
    key = new_key()
    append_entry(capped, entry_for("acme-follower", key, ["acme"]))
    open_store(capped).close()
    server = start_api(capped, client_for(capped))
    try:
        yield server, key
    finally:
        server.stop()


class Reader(threading.Thread):
    """A client that reads everything: the versions it saw, and how its stream ended."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.ready = threading.Event()
        self.versions: list[int] = []
        self.closed: dict | None = None
        self.stop = False

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.stream("GET", f"{self.url}/v1/control/stream", headers=headers,
                          timeout=60) as response:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "ready":
                        self.ready.set()
                elif line.startswith("data: ") and kind == "transition":
                    self.versions.append(json.loads(line[6:])["version"])
                elif line.startswith("data: ") and kind == "close":
                    self.closed = json.loads(line[6:])
                if self.stop:
                    return


def _stalled_client(url: str, key: str) -> socket.socket:
    """A stream whose client reads up to ``ready`` and then nothing (tiny receive buffer)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(f"GET /v1/control/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Authorization: Bearer {key}\r\n\r\n".encode())
    seen = b""
    while b"event: ready" not in seen:
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return sock


def test_a_key_gets_its_cap_of_streams_and_the_slowest_client_is_dropped_with_a_close(api):
    server, key = api
    reader = Reader(server.url, key)
    reader.start()
    assert reader.ready.wait(30), "the reading client got no ready event"
    stalled = _stalled_client(server.url, key)

    extra = httpx.get(f"{server.url}/v1/control/stream", timeout=10,
                      headers={"Authorization": f"Bearer {key}"})
    assert extra.status_code == 429, extra.text
    assert "control streams open already" in extra.json()["detail"]
    assert "AGENTLEDGER_CONTROL_STREAMS_PER_KEY" in extra.json()["detail"]

    hub = server.server.config.app.state.control_hub
    producer = Producer(client_config(server_settings_bootstrap(server), "producer"))
    version = 0
    batches = 0
    while hub.dropped == 0:
        batches += 1
        assert batches <= 400, f"no drop after {version} signals (reader saw " \
                               f"{len(reader.versions)})"
        for _ in range(BATCH):
            version += 1
            signal = ControlSignal(kind="safe_mode", scope="acme/triage", rule="errors",
                                   state="read_only" if version % 2 else "normal",
                                   version=version, ts=datetime.now(UTC),
                                   reason="x" * 2000)
            producer.produce(topics.CONTROL, signal.to_json(), signal.key.encode())
        assert producer.flush(30) == 0
        wait_for(lambda v=version: reader.versions and reader.versions[-1] >= v, 30,
                 interval_s=0.01, what=f"the reading client to see version {version}")

    # the reader kept up and was never dropped; the stalled stream was
    assert hub.dropped == 1 and reader.closed is None
    assert reader.versions == sorted(reader.versions) and reader.versions[-1] == version
    assert hub.open_streams() == 1  # the dropped one let its slot and queue go at once

    # the stalled client reads now: what was in flight, then the close and its reason
    stalled.settimeout(30)
    tail = b""
    while b"event: close" not in tail or not tail.endswith(b"\n\n"):
        chunk = stalled.recv(1 << 16)
        if not chunk:
            break
        tail += chunk
    stalled.close()
    close = tail[tail.index(b"event: close"):].split(b"\n")[1]
    assert close.startswith(b"data: "), tail[-300:]
    dropped = json.loads(close[6:])
    assert dropped["code"] == "slow_consumer" and "control_stream_queue" in dropped["reason"]

    # a slot is free again for this key
    again = Reader(server.url, key)
    again.start()
    assert again.ready.wait(30)
    reader.stop = again.stop = True


def server_settings_bootstrap(server: ApiServer) -> str:
    settings: Settings = server.server.config.app.state.otlp_settings
    return settings.kafka_bootstrap or ""
