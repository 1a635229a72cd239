"""The framework's own ceiling: a faust worker whose fold agent does nothing.

    .venv/bin/python bench/faust_ceiling.py BOOTSTRAP EVENTS

Same app settings and transport as the stream worker (``core.kafka.faust_config``,
``streams.transport.LowLatencyTransport``) and the same ``take_events`` batching, but the
agent only counts. Prints ``rate <events/s>`` once it has read ``EVENTS`` records of
``agent.events``. ``bench_control.py`` runs it beside the real worker, so the worker's
figure can be read against both raw consume and what faust itself costs per event.
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
from streams.transport import LowLatencyTransport


def main(bootstrap: str, total: int) -> None:
    app = faust.App(**faust_config(bootstrap, app_id=f"ceiling-{uuid.uuid4().hex[:8]}",
                                   partitions=3))
    app.transport = LowLatencyTransport(app.conf.broker_consumer, app)
    source = app.topic(topics.EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=0.02):
            seen["t0"] = seen["t0"] or time.perf_counter()
            seen["n"] += len(batch)
            if seen["n"] >= total:
                print(f"rate {seen['n'] / (time.perf_counter() - seen['t0']):.0f}", flush=True)
                os._exit(0)  # the figure is out; no need for an orderly faust shutdown

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
