"""The ledger API tests' one store, built once and shared by the modules of this package."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from agentledger.services import open_store, start_api
from tests.conftest import consume_all
from tests.ledger_api.ledger_store import TENANTS, Store, control_signals, full_run
from tests.sinkutil import run_sink


@pytest.fixture(scope="package")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    data = tmp_path_factory.mktemp("ledger")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.3)
        keys = {"acme": new_key(), "globex": new_key()}
        for tenant, key in keys.items():
            append_entry(settings, entry_for(f"{tenant}-reader", key, [tenant]))

        ledgers: list[Ledger] = []

        def make(ident: AgentIdentity) -> Ledger:
            ledgers.append(Ledger.connect(broker.bootstrap, ident))
            return ledgers[-1]

        result = Simulator(make, seed=11, tenants=TENANTS, error_rate=0.1).run(160)
        full = full_run(broker.bootstrap)
        signals = control_signals(broker.bootstrap)
        produced = result.events + len(full["event_ids"])
        events = [orjson.loads(m.value()) for m in
                  consume_all(broker.bootstrap, topics.EVENTS, produced)]
        run_sink(settings, produced + signals)

        client = open_store(settings)
        api = start_api(settings, client_for(settings))  # mints the operator key
        discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
        keys["operator"] = (settings.run_dir / "api.key").read_text().strip()
        env = {**__import__("os").environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap}
        try:
            yield Store(settings, api, client, keys, events, full, env)
        finally:
            discovery.withdraw(settings, discovery.STORE_FILE)
            api.stop()
            client.close()

