"""The OTLP intakes' shared stack: a real Tansu broker, the real sink into a chdb store, and
the ledger API serving ``POST /v1/traces``, with keys for acme, globex and both. One per
test module: chdb holds one store per process, and test_otlp_intake_process.py needs its
own between them. Each test uses its own traces, topics and consumer groups."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import TopicSpec, client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.services import ApiServer, start_api
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinkutil import SinkThread


@dataclass
class Stack:
    settings: Settings
    api: ApiServer
    sink: SinkThread
    keys: dict[str, str]
    env: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap or ""

    def post(self, body: bytes, key: str | None = "acme", **headers: str) -> httpx.Response:
        sent = {"Content-Type": "application/x-protobuf", **headers}
        if key:
            sent["Authorization"] = f"Bearer {self.keys[key]}"
        return httpx.post(f"{self.api.url}/v1/traces", content=body, headers=sent, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def stored(self, trace_id: str) -> list[tuple]:
        return self.sink.query("SELECT seq, event_type, event_id FROM events FINAL "
                               "WHERE trace_id = {t:String} ORDER BY seq", t=trace_id)

    def landed(self, trace_id: str, count: int) -> list[tuple]:
        return wait_for(lambda: (rows := self.stored(trace_id)) and len(rows) >= count and rows,
                        60, what=f"{count} events of trace {trace_id}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("otlp")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"),
                      [*default_topics(3), TopicSpec("otlp_spans", 3)])
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.2)
        keys = {"acme": new_key(), "globex": new_key(), "both": new_key()}
        for name, tenants in (("acme", ["acme"]), ("globex", ["globex"]),
                              ("both", ["acme", "globex"])):
            append_entry(settings, entry_for(f"{name}-writer", keys[name], tenants))
        with SinkThread(settings) as sink:
            api = start_api(settings, client_for(settings))
            app = api.server.config.app
            app.state.otlp_settings = settings
            app.state.otlp_grace_s = 0.2
            app.state.otlp_max_body = 256 * 1024
            discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
            keys["operator"] = (settings.run_dir / "api.key").read_text().strip()
            env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
                   "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
                   "AGENTLEDGER_API_KEY": keys["acme"]}
            try:
                yield Stack(settings, api, sink, keys, env)
            finally:
                discovery.withdraw(settings, discovery.STORE_FILE)
                api.stop()
