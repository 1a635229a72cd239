"""The framework's own ceiling: a faust worker that reads agent.events and does nothing.

    .venv/bin/python bench/faust_ceiling.py [--runs 10000] [--json]

Same app settings and transport as the stream worker (``core.kafka.faust_config``,
``streams.transport.BatchDeliveryTransport``), in a child process each. ``agent``: a
faust agent taking the topic record by record (``take_events`` batches of 2,000), as the
fold did before batch delivery. ``batch``: the topic delivered in whole fetches, as the
fold is now. Either only counts. Standalone, it fills an embedded broker with
``bench_control``'s dataset (``--runs`` x 4 events) and prints both rates beside raw
consume of the same topic; ``bench_control.py`` calls :func:`ceiling` beside the real
worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import faust
from faust.worker import Worker

from agentledger.core.kafka import faust_config
from agentledger.schemas import topics
from agentledger.streams.transport import BatchDeliveryTransport


def ceiling(bootstrap: str, total: int, mode: str = "agent") -> float:
    """Events/s of a do-nothing worker (``mode`` agent or batch) over ``total`` records."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", bootstrap,
                          str(total), mode], capture_output=True, text=True, timeout=900,
                         check=True).stdout
    return float(out.split("rate")[-1].split()[0])


def count_child(bootstrap: str, total: int, mode: str) -> None:
    app = faust.App(**faust_config(bootstrap, app_id=f"ceiling-{uuid.uuid4().hex[:8]}",
                                   partitions=3), broker_max_poll_records=2000)
    transport = app.transport = BatchDeliveryTransport(app.conf.broker_consumer, app)
    source = app.topic(topics.EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    def counted(n: int) -> None:
        seen["t0"] = seen["t0"] or time.perf_counter()
        seen["n"] += n
        if seen["n"] >= total:
            print(f"rate {seen['n'] / (time.perf_counter() - seen['t0']):.0f}", flush=True)
            os._exit(0)  # the figure is out; no need for an orderly faust shutdown

    if mode == "batch":
        async def count_batch(batch: list[Any]) -> None:
            counted(len(batch))

        app.topics.add(source)
        transport.deliver_in_batches(topics.EVENTS, count_batch)
    else:
        @app.agent(source)
        async def count(stream: Any) -> None:
            async for batch in stream.take_events(2000, within=0.02):
                counted(len(batch))

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        count_child(args.child[0], int(args.child[1]), args.child[2])
        return
    from bench_control import produce_fleet, raw_consume

    from agentledger.broker import EmbeddedBroker
    from agentledger.core.kafka import client_config, default_topics, ensure_topics

    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        total = produce_fleet(broker.bootstrap, args.runs)
        raw = raw_consume(broker.bootstrap, total)
        agent = ceiling(broker.bootstrap, total, "agent")
        batch = ceiling(broker.bootstrap, total, "batch")
    print(f"{total:,} events: raw consume {raw:,.0f} msg/s; faust agent that only counts "
          f"{agent:,.0f} events/s ({agent / raw:.1%}); batch delivery that only counts "
          f"{batch:,.0f} events/s ({batch / raw:.1%})")
    if args.json:
        print(json.dumps({"events": total, "raw_consume_per_s": round(raw),
                          "faust_agent_per_s": round(agent), "batch_delivery_per_s": round(batch),
                          "agent_ratio_to_raw_consume": round(agent / raw, 4),
                          "batch_ratio_to_raw_consume": round(batch / raw, 4)}))


if __name__ == "__main__":
    main()
