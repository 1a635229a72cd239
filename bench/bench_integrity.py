"""Integrity benchmarks (issue 23), one named measurement per function.

    .venv/bin/python bench/bench_integrity.py [--events 200000] [--rate 5000]
        [--seconds 20] [--only NAME ...] [--json]

- ``checkpoint_overhead``: the real sink (child process, real embedded broker, chdb)
  landing the same ``--events`` messages twice, once with ``checkpoints_enabled`` and once
  without (order alternated over ``--rounds``, best of each), so the figure is
  ``checkpoint_overhead_pct = (rate_off / rate_on - 1) * 100`` (goal <= 5) beside both
  raw rates; beside it the median over rounds of each round's own ratio (its two runs ran
  back to back, so it is steadier on a shared machine), the sink process's CPU per event
  in each mode (median) and how many batches had their leaves read back.
- ``coverage``: events produced at ``--rate`` events/s for ``--seconds`` to a sink with
  checkpoints on (default interval); for every leaf, landing (its ``ledger_leaves`` row,
  written in the flush that landed the event) to the issue time of the first signed head
  that covers it: ``covered_p99_s`` (goal <= 10), beside the raw baseline
  ``landed_p99_s`` (event produced -> landed in ``events``) of the same run.

- ``verify_ledger``: ``--verify-events`` events (default 10M; generated in chdb with
  INSERT … SELECT FROM numbers(), with the sink's leaf records and one signed head per
  log) recomputed and held to the heads, the work of ``agentledger verify --ledger`` in
  process: ``verify_ledger_10m_s`` (scaled to 10M when fewer; goal <= 60) beside the raw
  baseline ``raw_sha256_leaves_10m_s``, Python's ``hashlib.sha256`` over the same leaf
  bytes (read beforehand, untimed).
- ``offline_check``: ``agentledger.core.offline.check_bundle`` on a bundle of one 8-event
  run proven in a log of ``--proof-tree-size`` leaves: ``offline_check_ms`` (median of
  200; goal <= 50) and ``inclusion_proof_bytes`` (goal <= 2048), beside the raw baseline
  ``raw_ed25519_verify_ms`` (the head's signature alone).

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas import topics

WARMUP = 500
"""events produced (and covered) before the paced traffic of ``coverage`` starts"""


def seed_events(n: int = 2000) -> list[dict[str, Any]]:
    seed: list[dict[str, Any]] = []

    class Capture(Ledger):
        def send(self, event: dict[str, Any], traceparent: Any) -> None:
            seed.append(event)

    Simulator(lambda ident: Capture({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
                                    ident), seed=1).run(n)
    return seed


def _event(seed: list[dict[str, Any]], i: int, ts: datetime | None = None) -> tuple[bytes, bytes]:
    ev = dict(seed[i % len(seed)])
    ev["event_id"] = str(uuid.UUID(int=(0x0190 << 112) | (0x7 << 76) | (2 << 62) | i))
    if ts is not None:
        ev["ts"] = ts.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return orjson.dumps(ev), ev["run_id"].encode()


def _produce(bootstrap: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(client_config(bootstrap, "producer", **{"linger.ms": 20}))
    for value, key in payloads:
        while True:
            try:
                producer.produce(topics.EVENTS, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- children -------------------------------------------------------------------------------


def child_sink(bootstrap: str, data_dir: str, expected: int, checkpoints: bool,
               group: str) -> None:
    """Run the real sink until ``expected`` events are inserted; print its seconds."""
    from agentledger.services import build_sink, open_store

    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap,
                        checkpoints_enabled=checkpoints, sink_group=group)
    client = open_store(settings)
    sink = build_sink(settings, bootstrap, client)
    marks: dict[str, float] = {}

    def watch() -> None:
        while sink.stats.consumed == 0:
            time.sleep(0.005)
        marks["first"], marks["cpu_first"] = time.perf_counter(), time.process_time()
        while sink.stats.inserted < expected:
            time.sleep(0.01)
        marks["done"], marks["cpu_done"] = time.perf_counter(), time.process_time()
        sink.stop()

    threading.Thread(target=watch, daemon=True).start()
    sink.run()
    logs = getattr(sink.writes.writer, "logs", None)
    print(json.dumps({"seconds": marks["done"] - marks["first"],
                      "cpu_seconds": marks["cpu_done"] - marks["cpu_first"],
                      "inserted": sink.stats.inserted,
                      "read_back": logs.stats.read_back if logs is not None else 0}))


def child_coverage(bootstrap: str, data_dir: str, expected: int) -> None:
    """Run the sink with checkpoints until every event is covered; then read, per leaf,
    landing and first covering head, and per event, produced -> landed."""
    from agentledger.services import build_sink, open_store

    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap)
    client = open_store(settings)
    sink = build_sink(settings, bootstrap, client)
    covered_sql = ("SELECT sum(s) FROM (SELECT max(tree_size) AS s FROM checkpoints "
                   "GROUP BY log_id)")

    def watch() -> None:
        ready = Path(data_dir) / "ready"
        while (covered := client.query(covered_sql).result_rows[0][0] or 0) < expected:
            if covered >= WARMUP and not ready.exists():
                ready.write_text("covered the warm-up events\n")
            time.sleep(0.2)
        sink.stop()

    threading.Thread(target=watch, daemon=True).start()
    sink.run()
    heads: dict[str, tuple[list[int], list[float]]] = {}
    for log_id, size, issued in client.query(
            "SELECT log_id, tree_size, toUnixTimestamp64Milli(issued_at) FROM checkpoints "
            "ORDER BY log_id, tree_size").result_rows:
        sizes, times = heads.setdefault(str(log_id), ([], []))
        sizes.append(int(size))
        times.append(int(issued) / 1000)
    covered = []
    for log_id, index, landed in client.query(
            "SELECT log_id, leaf_index, toUnixTimestamp64Milli(landed_at) "
            "FROM ledger_leaves").result_rows:
        sizes, times = heads[str(log_id)]
        at = bisect.bisect_right(sizes, int(index))  # first head with size > index
        covered.append(times[at] - int(landed) / 1000)
    landed = [float(r[0]) / 1000 for r in client.query(
        "SELECT toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts) "
        "FROM events").result_rows]
    print(json.dumps({"covered_p99_s": _p(covered, 0.99), "covered_p50_s": _p(covered, 0.5),
                      "landed_p99_s": _p(landed, 0.99), "landed_p50_s": _p(landed, 0.5),
                      "leaves": len(covered), "heads": sum(len(s) for s, _ in heads.values())}))


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else -1.0


# -- measurements ---------------------------------------------------------------------------


def checkpoint_overhead(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    seed = seed_events()
    n = opts.events
    seconds: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    read_back = 0
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        _produce(broker.bootstrap, [_event(seed, i) for i in range(n)])
        for r in range(opts.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                got = _child(["sink", broker.bootstrap, str(work / f"s{r}{int(on)}"), str(n),
                              "1" if on else "0", f"bench-{r}-{int(on)}"])
                seconds[on].append(got["seconds"])
                cpu[on].append(got["cpu_seconds"])
                read_back += got["read_back"]
    rate_on, rate_off = n / min(seconds[True]), n / min(seconds[False])
    # each round's two runs ran back to back: their ratio cancels what the machine did in
    # between rounds, so the median over rounds is steadier than the ratio of the bests
    paired = sorted((on / off - 1) * 100 for on, off in zip(seconds[True], seconds[False],
                                                            strict=True))
    return {"checkpoint_overhead_pct": round((rate_off / rate_on - 1) * 100, 2),
            "checkpoint_overhead_paired_median_pct": round(statistics.median(paired), 2),
            "checkpoint_overhead_paired_pct": [round(x, 1) for x in paired],
            "sink_events_per_s_with_checkpoints": round(rate_on),
            "sink_events_per_s_without_checkpoints": round(rate_off),
            # the sink process's CPU (all threads, the engine's included) per event, median
            "sink_cpu_us_per_event_with_checkpoints": round(
                statistics.median(cpu[True]) / n * 1e6, 2),
            "sink_cpu_us_per_event_without_checkpoints": round(
                statistics.median(cpu[False]) / n * 1e6, 2),
            # batches whose leaves were read back from events instead of recorded as they
            # landed (sinks/ledger_engine.py); 0 when every span was contiguous
            "checkpoint_read_back_batches": read_back,
            "overhead_events": n, "overhead_rounds": opts.rounds}


def coverage(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    seed = seed_events()
    n = int(opts.rate * opts.seconds)
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        result: list[dict[str, Any]] = []
        child = threading.Thread(target=lambda: result.append(_child(
            ["coverage", broker.bootstrap, str(work / "coverage"), str(n + WARMUP)])))
        child.start()
        producer = Producer(client_config(broker.bootstrap, "producer", **{"linger.ms": 5}))
        # the measured traffic starts once the sink covers a warm-up (store open, assigned)
        for i in range(WARMUP):
            value, key = _event(seed, n + i, datetime.now(UTC))
            producer.produce(topics.EVENTS, value=value, key=key)
        producer.flush(30)
        deadline = time.monotonic() + 120
        while not (work / "coverage" / "ready").exists():
            if time.monotonic() > deadline or not child.is_alive():
                raise RuntimeError("the coverage sink did not start")
            time.sleep(0.1)
        start = time.perf_counter()
        for i in range(n):
            due = start + i / opts.rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            value, key = _event(seed, i, datetime.now(UTC))
            producer.produce(topics.EVENTS, value=value, key=key)
            producer.poll(0)
        producer.flush(60)
        achieved = n / (time.perf_counter() - start)
        child.join()
    return {**result[0], "coverage_rate_target": opts.rate,
            "coverage_rate_achieved": round(achieved), "coverage_events": n}


# --- verify --ledger and offline checks (engineer B) ---------------------------------------

_GEN_EVENTS = """
INSERT INTO events (event_id, event_type, ts, tenant, agent, run_id, seq, prev_hash, hash,
                    body, raw, kafka_partition, kafka_offset)
SELECT generateUUIDv4(number), 'tool.call',
       toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + intDiv(number, 100),
       concat('tenant-', toString(intDiv(number, 8) % 20)), 'bench-agent',
       concat('run-', lower(hex(SHA256(toString(intDiv(number, 8)))))), number % 8, '',
       lower(hex(SHA256(toString(number)))), '{{}}', '{{}}',
       intDiv(number, 8) % 3, number
FROM numbers({start}, {count})"""


_GEN_LEAVES = """
INSERT INTO ledger_leaves (log_id, leaf_index, event_id, tenant, run_id, event_hash,
                           kafka_offset)
SELECT concat('agent.events/', toString(kafka_partition)), 0, toString(event_id), tenant,
       run_id, hash, kafka_offset FROM events"""


def _ledger_store(events: int, data_dir: Path) -> tuple[Any, Any]:
    """An embedded store holding ``events`` events (the columns a leaf reads filled) and
    the sink's leaf records, generated in the engine with INSERT … SELECT FROM numbers(),
    and one signed head per log over everything, as the sink would have signed it."""
    from agentledger.core import checkpoint, signing
    from agentledger.core.merkle_levels import Levels
    from agentledger.queries import ledger_verify as lv
    from agentledger.services import open_store

    client = open_store(Settings(data_dir=data_dir))
    step = 2_000_000
    for start in range(0, events, step):
        client.command(_GEN_EVENTS.format(start=start, count=min(step, events - start)))
    client.command(_GEN_LEAVES)
    key = signing.LedgerKey.generate()
    for p in lv.store_partitions(client):
        log = lv.read_log(client, p)
        ms = int(time.time() * 1000)
        head = checkpoint.sign_head(key, log.log_id, log.size,
                                    Levels(log.leaves).root(log.size).hex(), ms)
        client.insert("checkpoints", [[head.log_id, head.tree_size, head.root_hash,
                                       datetime.fromtimestamp(ms / 1000, UTC), head.key_id,
                                       head.signature]],
                      column_names=["log_id", "tree_size", "root_hash", "issued_at",
                                    "key_id", "signature"])
    return client, key


def verify_ledger(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``verify_ledger_10m_s``: recompute every log from ``events`` stored events and hold it
    to the signed heads (the work of ``agentledger verify --ledger``, in process); beside it
    the raw baseline: Python's hashlib sha256 over the same leaf bytes, read beforehand."""
    import hashlib

    from agentledger.core import merkle
    from agentledger.queries import ledger_verify as lv

    events = opts.verify_events
    with tempfile.TemporaryDirectory(prefix="bench-verify-", dir=work) as tmp:
        started = time.perf_counter()
        client, key = _ledger_store(events, Path(tmp))
        setup_s = time.perf_counter() - started
        started = time.perf_counter()
        report = lv.verify_ledger(client, key.keyring())
        verify_s = time.perf_counter() - started
        assert report["ok"] and report["leaves"] == events, report["problems"][:3]
        raw_s = 0.0
        prefix = merkle.LEAF_PREFIX + merkle.LEAF_VERSION.encode() + b"\n"
        for start in range(0, events, 1_000_000):
            chunk = [prefix + f"{t}\n{r}\n{e}\n{h}".encode() for t, r, e, h in client.query(
                "SELECT tenant, run_id, toString(event_id), hash FROM events "
                "WHERE kafka_offset >= {a:UInt64} AND kafka_offset < {b:UInt64}",
                parameters={"a": start, "b": start + 1_000_000}).result_rows]
            sha = hashlib.sha256
            t0 = time.perf_counter()
            for data in chunk:
                sha(data).digest()
            raw_s += time.perf_counter() - t0
        client.close()
    return {"verify_ledger_events": events, "verify_ledger_s": round(verify_s, 2),
            "verify_ledger_10m_s": round(verify_s * 10_000_000 / events, 2),
            "verify_ledger_setup_s": round(setup_s, 1),
            "raw_sha256_leaves_s": round(raw_s, 2),
            "raw_sha256_leaves_10m_s": round(raw_s * 10_000_000 / events, 2)}


def offline_check(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``offline_check_ms``: :func:`agentledger.core.offline.check_bundle` on a bundle of one
    8-event run whose inclusion proof is in a log of ``tree_size`` leaves (proof length
    log2 of it), median of ``reps``; ``inclusion_proof_bytes``: the proof as JSON. Raw
    baseline: one ed25519 verify of the head."""
    import hashlib
    import statistics

    from agentledger.core import checkpoint, merkle, offline, signing
    from agentledger.core.merkle_levels import Levels
    from agentledger.schemas.integrity import GENESIS, event_hash

    tree_size, reps = opts.proof_tree_size, 200

    key = signing.LedgerKey.generate()
    events, prev = [], GENESIS
    for seq in range(8):
        event = {"event_id": f"00000000-0000-4000-8000-{seq:012d}", "run_id": "run-1",
                 "tenant": "acme", "seq": seq, "canon": "jcs", "event_type": "tool.call",
                 "body": {"tool": "crm", "args": {"n": seq}}, "prev_hash": prev}
        event["hash"] = prev = event_hash(event, prev)
        events.append(event)
    last = events[-1]
    leaf = {"tenant": "acme", "run_id": "run-1", "event_id": last["event_id"],
            "event_hash": last["hash"]}
    index = tree_size - 3
    leaves = bytearray()
    for i in range(tree_size):
        leaves += (merkle.leaf_hash(merkle.leaf_input(**leaf)) if i == index
                   else hashlib.sha256(i.to_bytes(8, "big")).digest())
    levels = Levels(bytes(leaves))
    head = checkpoint.sign_head(key, "agent.events/0", tree_size,
                                levels.root(tree_size).hex(), int(time.time() * 1000))
    proof = {"format": "agentledger.inclusion.v1", "status": "included",
             "log_id": head.log_id, "leaf": leaf, "leaf_index": index,
             "tree_size": tree_size,
             "proof": [p.hex() for p in levels.inclusion_proof(index, tree_size)],
             "head": head.to_dict()}
    bundle = {"runs": [{"run_id": "run-1", "events": events, "inclusion": proof}]}
    text = json.dumps(bundle)
    ring = key.keyring()
    assert offline.check_bundle(json.loads(text), ring) == []
    times, raw = [], []
    message = head.message()
    signature = bytes.fromhex(head.signature)
    for _ in range(reps):
        t0 = time.perf_counter()
        assert offline.check_bundle(json.loads(text), ring) == []
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        key.public.verify(signature, message)
        raw.append(time.perf_counter() - t0)
    return {"offline_check_ms": round(statistics.median(times) * 1000, 3),
            "offline_check_p99_ms": round(sorted(times)[int(reps * 0.99) - 1] * 1000, 3),
            "offline_check_tree_size": tree_size,
            "inclusion_proof_bytes": len(json.dumps(proof)),
            "raw_ed25519_verify_ms": round(statistics.median(raw) * 1000, 3)}


MEASUREMENTS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "checkpoint_overhead": checkpoint_overhead,
    "coverage": coverage,
    "verify_ledger": verify_ledger,
    "offline_check": offline_check,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "sink":
            child_sink(rest[0], rest[1], int(rest[2]), rest[3] == "1", rest[4])
        else:
            child_coverage(rest[0], rest[1], int(rest[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", nargs="*", choices=sorted(MEASUREMENTS))
    parser.add_argument("--verify-events", type=int, default=10_000_000,
                        help="stored events verify_ledger recomputes")
    parser.add_argument("--proof-tree-size", type=int, default=1_000_000,
                        help="leaves of the log the offline-checked proof is in")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, measure in MEASUREMENTS.items():
            if opts.only and name not in opts.only:
                continue
            figures.update(measure(opts, Path(tmp)))
            if not opts.json:
                print(name, {k: v for k, v in figures.items()}, flush=True)
    if opts.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
