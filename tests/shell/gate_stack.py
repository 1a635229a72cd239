"""The HTTP gate's test stack: a real Tansu broker, the real sink into a real chdb store and
the ledger API on a loopback port, with an agent key (bound to acme/refund-agent), two
finance approvers and a tenant reader with no agent. Shared by the Python tests of
``POST /v1/gate/check`` and the Node agent that plays a client in another language.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.core import signing
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal, breaker_scope
from agentledger.services import ApiServer, start_api
from tests.sinkutil import SinkThread

AGENT = "refund-agent"


@dataclass
class GateStack:
    settings: Settings
    sink: SinkThread
    api: ApiServer
    keys: dict[str, str]
    ledger_key: signing.LedgerKey

    def call(self, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.api.url}{path}", timeout=60,
                             headers={"Authorization": f"Bearer {self.keys[key]}"}, **kw)

    def check(self, key: str = "agent", **body: Any) -> httpx.Response:
        return self.call("POST", "/v1/gate/check", key, json=body)

    def query(self, sql: str, **params: object) -> list[tuple]:
        return self.sink.query(sql, **params)

    def breaker(self, tenant: str, tool: str, state: str, version: int) -> None:
        """Publish a breaker transition signed with the ledger's key, as the stream
        workers do (the API's control follower obeys only signed records)."""
        signal = ControlSignal(kind="breaker", scope=breaker_scope(tenant, tool), state=state,
                               version=version, ts=datetime.now(UTC), reason="test breaker")
        producer = Producer(client_config(self.settings.kafka_bootstrap or "", "producer"))
        producer.produce(topics.CONTROL,
                         signing.sign_json(self.ledger_key, signing.CONTROL, signal.to_json()),
                         signal.key.encode())
        assert producer.flush(15) == 0


def gate_stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[GateStack]:
    """The stack (a generator for a fixture): the API verifies control and approval records
    with the data dir's ledger key; no stream worker runs, so the staleness bound is an
    hour (a real deployment has heartbeats every second)."""
    settings = settings.model_copy(update={"gate_stale_after_s": 3600.0})
    monkeypatch.setenv("AGENTLEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("AGENTLEDGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AGENTLEDGER_LEDGER_KEY_DIR", str(signing.key_dir(settings)))
    key = signing.ledger_key(settings)
    keys = {name: new_key() for name in ("agent", "ana", "ben", "reader", "multi")}
    ring = KeyRing([
        entry_for(f"{AGENT}@acme", keys["agent"], ["acme"], agents=[AGENT]),
        entry_for("ana@finance", keys["ana"], ["acme"], roles=["finance"]),
        entry_for("ben@finance", keys["ben"], ["acme"], roles=["finance"]),
        entry_for("acme-reader", keys["reader"], ["acme"]),
        entry_for("two-agents", keys["multi"], ["acme"], agents=[AGENT, "triage-bot"]),
    ])
    with SinkThread(settings) as sink:
        api = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1", port=0)
        try:
            yield GateStack(settings, sink, api, keys, key)
        finally:
            desk = getattr(api.server.config.app.state, "approvals", None)
            if desk is not None:
                desk.close()
            api.stop()
