"""The framework's own ceiling: a faust worker that reads agent.events and does nothing.

    .venv/bin/python bench/faust_ceiling.py BOOTSTRAP EVENTS [agent|batch]

Same app settings and transport as the stream worker (``core.kafka.faust_config``,
``streams.transport.BatchDeliveryTransport``). ``agent``: a faust agent taking the topic
record by record (``take_events`` batches of 2,000), as the fold did before batch
delivery. ``batch``: the topic delivered in whole fetches, as the fold is now. Either only
counts. Prints ``rate <events/s>`` once it has read ``EVENTS`` records. ``bench_control.py``
runs both beside the real worker, so its figure reads against raw consume and against
what faust itself costs per event.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import faust
from faust.worker import Worker

from core.kafka import faust_config
from schemas import topics
from streams.transport import BatchDeliveryTransport


def main(bootstrap: str, total: int, mode: str) -> None:
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


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "agent")
