"""The dashboards' shared store: one broker, stream worker, sink and chdb store filled with
a simulated fleet and a tool outage, shared by every test module here (package scope:
chdb allows one store per process)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.scenarios import run_scenario
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics
from agentledger.services import open_store
from tests.helpers import wait_for
from tests.sinkutil import SinkThread
from tests.streamutil import StreamWorker


@pytest.fixture(scope="package")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import os

    from agentledger.broker import EmbeddedBroker
    from agentledger.core.kafka import default_topics, ensure_topics

    data = tmp_path_factory.mktemp("dash")
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        ensure_topics(client_config(bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=bootstrap,
                            sink_batch_seconds=0.3)
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"}
        with StreamWorker(env, data / "worker.log") as worker, \
                ControlFollower(bootstrap) as follower, SinkThread(settings) as sink:
            worker.wait_ready(follower)
            Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=4,
                      tenants=("acme", "globex")).run(120)
            result = run_scenario("tool-outage",
                                  lambda ident, clock: Ledger.connect(bootstrap, ident,
                                                                      clock=clock),
                                  follower=follower, seed=3)
            wait_for(lambda: follower.event_time >= result.end_ts, 30, what="decisions")
            garbage = Producer(client_config(bootstrap, "producer"))
            for payload in (b"not json", b"{}", b'{"event_type": "tool.call"}'):
                garbage.produce(topics.EVENTS, payload, b"junk")
            assert garbage.flush(10) == 0
            wait_for(lambda: sink.query("SELECT count() FROM control_signals FINAL WHERE "
                                        "kind = 'breaker' AND state = 'CLOSED'")[0][0] >= 1
                     and sink.query("SELECT count() FROM rejected_events")[0][0] >= 3,
                     60, what="signals and rejects landed")
            wait_for(lambda: sink.query("SELECT count() FROM events")[0][0] >= result.events,
                     60, what="scenario events landed")
        client = open_store(settings)
        client.insert("revenue", [["acme", "crm_update", dt.date(2020, 1, 1), 1_250_000, ""]],
                      column_names=["tenant", "workflow", "valid_from",
                                    "revenue_per_success_micros", "note"])
        first, last = client.query("SELECT min(ts), max(ts) FROM events").result_rows[0]
        run_id = client.query("SELECT run_id FROM daily_economics WHERE outcome = 'aborted' "
                              "LIMIT 1").result_rows[0][0]
        try:
            yield {"settings": settings, "client": client, "run_id": run_id,
                   "from": first.replace(tzinfo=dt.UTC) - dt.timedelta(minutes=5),
                   "to": last.replace(tzinfo=dt.UTC) + dt.timedelta(minutes=5)}
        finally:
            client.close()
