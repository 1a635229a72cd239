"""Sink rate Kafka → ClickHouse vs raw chdb insert and raw Kafka consume; sink peak RSS.

    .venv/bin/python bench/bench_sink.py [--events 1000000] [--json]

The events are real SDK events (generated once, then produced with a bare producer so the
bench does not wait on the SDK). The sink runs in a child process so its peak RSS is its
own. Baselines, same run: a bare confluent-kafka consumer reading the same topic, and
clickhouse-connect inserting the sink's exact rows into an identical table in 50k batches,
both row-oriented and column-oriented; the ratio is taken against the faster of the two.

The sink's own ceiling, same run: the same sink (decode, batch, write thread, commit)
with its consumer swapped for an in-memory one holding the same messages, in a child
process of its own. Against the embedded broker the sink cannot go faster than raw
consume; this figure says what the sink's code costs without the broker.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.sinks.migrate import migrate


def make_payloads(n: int) -> list[tuple[bytes, bytes]]:
    """n distinct valid events: simulate once, then re-id copies (the sink does not verify
    chains, and ids are what dedup counts)."""
    seed: list[dict] = []

    class Capture(Ledger):
        def send(self, event, traceparent):
            seed.append(event)

    Simulator(lambda ident: Capture({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, ident),
              seed=1).run(2000)
    out = []
    for i in range(n):
        ev = dict(seed[i % len(seed)])
        ev["event_id"] = str(uuid.UUID(int=(0x0190 << 112) | (0x7 << 76) | (2 << 62) | i))
        out.append((orjson.dumps(ev), ev["run_id"].encode()))
    return out


def sink_child(bootstrap: str, data_dir: str, expected: int) -> None:
    from agentledger.services import build_sink, open_store

    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap)
    client = open_store(settings)
    _time_sink(build_sink(settings, bootstrap, client), expected)


def _time_sink(sink: Any, expected: int) -> None:
    """Run ``sink`` until it inserted ``expected`` events; print seconds from its first
    message, and this process's peak RSS, as one JSON line."""
    marks: dict[str, float] = {}

    def watch() -> None:
        while sink.stats.consumed == 0:
            time.sleep(0.005)
        marks["first"] = time.perf_counter()
        while sink.stats.inserted < expected:
            time.sleep(0.01)
        marks["done"] = time.perf_counter()
        sink.stop()

    threading.Thread(target=watch, daemon=True).start()
    sink.run()
    print(json.dumps({"seconds": marks["done"] - marks["first"], "peak_rss_mib": _peak_rss_mib(),
                      "inserted": sink.stats.inserted}))


def _peak_rss_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` of its address space. Not ``ru_maxrss``:
    Linux carries the parent's peak into a child across fork and exec, and the parent here
    holds every payload, so ``ru_maxrss`` grew with ``--events`` whatever the sink did."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Message:
    """Just what the sink reads of a confluent-kafka message."""

    __slots__ = ("_key", "_offset", "_partition", "_value")

    def __init__(self, value: bytes, key: bytes, partition: int, offset: int):
        self._value, self._key, self._partition, self._offset = value, key, partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "agent.events"

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, int(time.time() * 1000))


class _MemoryConsumer:
    """The bench's messages, handed out like a consumer that is never waited on. They are
    read from a file as they are consumed, as a broker would send them: held in memory,
    the input itself (and generating it) was most of this process's peak RSS."""

    def __init__(self, path: str):
        self.file, self.at = open(path, "rb"), 0  # noqa: SIM115 - read until the run ends

    def subscribe(self, topics: list[str], on_revoke: object = None) -> None:
        pass

    def consume(self, num_messages: int = 5000, timeout: float = 0.2) -> list[_Message]:
        out = []
        while len(out) < num_messages and (head := self.file.read(6)):
            value_len, key_len = struct.unpack("<IH", head)
            value, key = self.file.read(value_len), self.file.read(key_len)
            out.append(_Message(value, key, self.at % 3, self.at // 3))
            self.at += 1
        if not out:
            time.sleep(0.01)
        return out

    def seek(self, partition: object) -> None:
        raise AssertionError("the in-memory consumer never skips an offset")

    def commit(self, offsets: object = None, asynchronous: bool = False) -> None:
        pass

    def assignment(self) -> list:
        return []

    def position(self, partitions: list) -> list:
        return []

    def get_watermark_offsets(self, partition: object, timeout: float = 1,
                              cached: bool = False) -> tuple[int, int]:
        return (0, 0)

    def close(self) -> None:
        self.file.close()


def _write_messages(path: str, payloads: list[tuple[bytes, bytes]]) -> None:
    with open(path, "wb") as out:
        for value, key in payloads:
            out.write(struct.pack("<IH", len(value), len(key)) + value + key)


class _NoDeadLetters:
    def send(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the bench's events are all valid")

    def flush(self, timeout_s: float = 30) -> None:
        pass


def steps_child(data_dir: str, n: int, messages: str) -> None:
    from agentledger.services import open_store
    from agentledger.sinks.clickhouse import ClickHouseWriter
    from agentledger.sinks.consumer import BatchPolicy, Sink

    settings = Settings(data_dir=Path(data_dir))
    client = open_store(settings)
    sink = Sink(_MemoryConsumer(messages),
                ClickHouseWriter(client, settings.clickhouse_database),
                _NoDeadLetters(),  # type: ignore[arg-type]
                policy=BatchPolicy(settings.sink_batch_rows, settings.sink_batch_bytes,
                                   settings.sink_batch_seconds))
    _time_sink(sink, n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--steps-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sink_child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.steps_child:
        steps_child(args.steps_child[0], int(args.steps_child[1]), args.steps_child[2])
        return
    n = args.events
    payloads = make_payloads(n)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        producer = Producer(client_config(broker.bootstrap, "producer"))
        for value, key in payloads:
            while True:
                try:
                    producer.produce("agent.events", value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush()

        # raw consume
        consumer = Consumer(client_config(broker.bootstrap, "consumer", group_id="raw-bench"))
        consumer.subscribe(["agent.events"])
        got, t0 = 0, None
        while got < n:
            batch = consumer.consume(10_000, timeout=1)
            if batch and t0 is None:
                t0 = time.perf_counter()
            got += len(batch)
        consume_s = time.perf_counter() - t0
        consumer.close()

        # the sink, in a child process
        child = subprocess.run(
            [sys.executable, __file__, "--child", broker.bootstrap, f"{tmp}/sink", str(n)],
            capture_output=True, text=True, check=True)
        sink = json.loads(child.stdout.strip().splitlines()[-1])
        _write_messages(f"{tmp}/steps-input", payloads)
        child = subprocess.run(
            [sys.executable, __file__, "--steps-child", f"{tmp}/steps", str(n),
             f"{tmp}/steps-input"],
            capture_output=True, text=True, check=True)
        steps = json.loads(child.stdout.strip().splitlines()[-1])

        # raw chdb insert of the sink's exact rows
        settings = Settings(data_dir=Path(f"{tmp}/raw"))
        client = client_for(settings, database=False)
        migrate(client, db="rawbench", ttl_days=settings.ttl_days())
        rows = [event_row(orjson.loads(v), v, 0, i) for i, (v, _) in enumerate(payloads)]
        t0 = time.perf_counter()
        for i in range(0, n, 50_000):
            client.insert("rawbench.events", rows[i:i + 50_000], column_names=EVENT_COLUMNS)
        insert_s = time.perf_counter() - t0
        migrate(client, db="rawcols", ttl_days=settings.ttl_days())
        t0 = time.perf_counter()
        for i in range(0, n, 50_000):
            columns = list(zip(*rows[i:i + 50_000], strict=True))
            client.insert("rawcols.events", columns, column_names=EVENT_COLUMNS,
                          column_oriented=True)
        insert_cols_s = time.perf_counter() - t0
        client.close()  # chdb's background merges must stop before the directory goes

    sink_rate = n / sink["seconds"]
    raw_rows, raw_cols = n / insert_s, n / insert_cols_s
    raw = max(raw_rows, raw_cols)
    avg = sum(len(v) for v, _ in payloads) / n
    print(f"events: {n:,} (avg {avg:.0f} bytes)")
    print(f"sink kafka→clickhouse: {sink_rate:12,.0f} events/s")
    print(f"raw chdb insert, rows: {raw_rows:12,.0f} rows/s (same rows, 50k batches)")
    print(f"raw chdb insert, cols: {raw_cols:12,.0f} rows/s (same rows transposed, 50k batches)")
    print(f"raw kafka consume:     {n / consume_s:12,.0f} messages/s")
    print(f"ratio sink/raw insert: {sink_rate / raw:12.1%}  (goal >= 80%, against the faster)")
    print(f"ratio sink/raw consume:{sink_rate / (n / consume_s):12.1%}  (the broker's fetch rate)")
    steps_rate = n / steps["seconds"]
    print(f"sink, in-memory input: {steps_rate:12,.0f} events/s  ({steps_rate / raw:.1%} of raw "
          f"insert; peak RSS {steps['peak_rss_mib']:,.0f} MiB)")
    print(f"sink peak RSS:         {sink['peak_rss_mib']:12,.0f} MiB  (goal <= 512)")
    if args.json:
        print(json.dumps({
            "events": n, "events_per_s": round(sink_rate),
            "raw_insert_rows_per_s": round(raw_rows), "raw_insert_columns_per_s": round(raw_cols),
            "raw_consume_per_s": round(n / consume_s),
            "ratio_to_raw_insert": round(sink_rate / raw, 3),
            "ratio_to_raw_row_insert": round(sink_rate / raw_rows, 3),
            "peak_rss_mib": round(sink["peak_rss_mib"]),
            "ratio_to_raw_consume": round(sink_rate / (n / consume_s), 3),
            "steps_events_per_s": round(steps_rate),
            "steps_ratio_to_raw_insert": round(steps_rate / raw, 3),
            "steps_peak_rss_mib": round(steps["peak_rss_mib"]),
        }))


if __name__ == "__main__":
    main()
