"""Query speed of the ledger API over millions of events in the embedded store.

    .venv/bin/python bench/bench_queries.py [--events 10000000] [--iterations 60]

Generates the events with the real SDK (``MemoryLedger``: ids, hash chains, redaction,
the simulator's workflows for 20 tenants over 30 days of event time), straight into
ClickHouse (not through Kafka) from two worker processes writing Parquet chunks that the
store's owner inserts — so the materialized views fill exactly as the sink fills them.
Then it times, through the HTTP API as users call it:

- trace lookup and run timeline (goal p99 ≤ 50 ms),
- one filtered search page,
- dashboard-style aggregations: error rate per tool per minute over 24 h, cost per
  successful task per workflow per day over 30 days, margins by workflow over 30 days
  (goal p95 ≤ 300 ms),

and, as the raw baseline in the same run, the bare ClickHouse lookup of one run's rows
(clickhouse-connect, no API, no dedup) and the raw insert rate. It reports storage size
per million events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import orjson

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.services import open_store, start_api

TENANTS = tuple(f"tenant-{i:02d}" for i in range(20))
DAYS = 30
CHUNK = 100_000


def _arrow_schema() -> Any:
    import pyarrow as pa

    types = {"ts": pa.timestamp("us", tz="UTC"), "schema_version": pa.uint8(),
             "seq": pa.uint32(), "tokens_in": pa.uint32(), "tokens_out": pa.uint32(),
             "cost_usd": pa.float64(), "latency_ms": pa.float64(),
             "kafka_partition": pa.uint16(), "kafka_offset": pa.uint64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in EVENT_COLUMNS])


def generate(worker: int, workers: int, events: int, out_dir: str, start: float) -> None:
    """One worker: simulated runs spread over DAYS, written as Parquet chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agentledger.producers.memory import MemoryLedger
    from agentledger.producers.simulator import Simulator

    schema = _arrow_schema()
    ledgers: list[MemoryLedger] = []
    clock_now = [dt.datetime.fromtimestamp(start, dt.UTC)]

    def clock() -> dt.datetime:
        clock_now[0] += dt.timedelta(milliseconds=37)
        return clock_now[0]

    def make(identity: Any) -> MemoryLedger:
        ledgers.append(MemoryLedger(identity, clock=clock, validate=False))
        return ledgers[-1]

    sim = Simulator(make, seed=1000 + worker, tenants=TENANTS, error_rate=0.03)
    runs_guess = events // 7
    step_s = DAYS * 86400 / max(runs_guess, 1)
    made, chunk, n = 0, 0, 0
    rows: list[list[Any]] = []
    while made < events:
        clock_now[0] = dt.datetime.fromtimestamp(start + (n * workers + worker) * step_s
                                                 / workers, dt.UTC)
        sim.one_run(n)
        n += 1
        for ledger in ledgers:
            for raw in ledger.take():
                rows.append(event_row(orjson.loads(raw), raw, worker, made))
                made += 1
        if len(rows) >= CHUNK or made >= events:
            columns = list(zip(*rows, strict=True))
            table = pa.table({c: pa.array(columns[i], type=schema.field(c).type)
                              for i, c in enumerate(EVENT_COLUMNS)}, schema=schema)
            tmp = Path(out_dir) / f"w{worker}-{chunk:05d}.tmp"
            pq.write_table(table, tmp, compression="lz4")
            tmp.rename(tmp.with_suffix(".parquet"))
            chunk += 1
            rows = []


def load(settings: Settings, out_dir: Path, events: int, workers: int) -> float:
    """Insert chunks as workers finish them; returns seconds spent inserting."""
    client = open_store(settings)
    columns = ", ".join(EVENT_COLUMNS)
    start = time.time() - DAYS * 86400
    procs = [mp.Process(target=generate, args=(w, workers, events // workers, str(out_dir),
                                               start)) for w in range(workers)]
    for p in procs:
        p.start()
    inserted, insert_s = 0, 0.0
    t0 = time.perf_counter()
    while True:
        chunks = sorted(out_dir.glob("*.parquet"))
        if not chunks:
            if not any(p.is_alive() for p in procs):
                break
            time.sleep(0.2)
            continue
        for chunk in chunks:
            t = time.perf_counter()
            client.command(f"INSERT INTO events ({columns}) SELECT {columns} "
                           f"FROM file('{chunk}', Parquet)")
            insert_s += time.perf_counter() - t
            chunk.unlink()
            inserted += CHUNK
            print(f"\r  {min(inserted, events):,} / {events:,} events "
                  f"({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"generator exited {p.exitcode}"
    client.close()
    return insert_s


def timed(fn: Any, iterations: int) -> list[float]:
    fn()  # warm
    samples = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=None, help="keep the store here (default: temp)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    base = Path(args.dir or tempfile.mkdtemp(prefix="al-bench-q-"))
    settings = Settings(data_dir=base / "data")
    chunks = base / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    insert_s = load(settings, chunks, args.events, args.workers)
    total_s = time.perf_counter() - t0

    client = client_for(settings)
    n = client.command("SELECT count() FROM events")
    deadline = time.monotonic() + 120
    while client.command("SELECT count() FROM system.merges") and time.monotonic() < deadline:
        time.sleep(1)
    sizes = client.query("SELECT table, sum(bytes_on_disk), count() FROM system.parts "
                         "WHERE active AND database = currentDatabase() GROUP BY table "
                         "ORDER BY table").result_rows
    # Sample ids to look up: random runs across the whole range.
    sample = client.query("SELECT run_id, trace_id, tenant FROM events WHERE seq = 0 "
                          "ORDER BY rand() LIMIT 200").result_rows
    key = new_key()
    api = start_api(settings, client, keys=KeyRing([entry_for("bench", key, ["*"])]),
                    host="127.0.0.1", port=0)
    http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=120)
    rng = random.Random(7)

    def get(path: str, **params: Any) -> Any:
        response = http.get(path, params=params)
        assert response.status_code == 200, (path, response.text[:300])
        return response

    def pick() -> tuple[str, str, str]:
        return sample[rng.randrange(len(sample))]

    raw = client_for(settings)
    economics_sql = (
        "SELECT day, workflow, countIf(outcome = 'success') AS successes, "
        "sum(cost_micros) / 1e6 AS cost_usd, cost_usd / nullIf(successes, 0) AS per_success "
        "FROM daily_economics FINAL WHERE tenant = {t:String} "
        "AND day >= today() - 30 GROUP BY day, workflow ORDER BY day, workflow")
    cases = {
        "raw: one run's rows (clickhouse-connect)": lambda: raw.query(
            "SELECT raw FROM events WHERE run_id = {r:String}", parameters={"r": pick()[0]}),
        "trace lookup (timeline by trace id)": lambda: get(f"/v1/timeline/{pick()[1]}"),
        "run timeline (by run id)": lambda: get(f"/v1/timeline/{pick()[0]}"),
        "replay bundle (by run id, verified)": lambda: get(f"/v1/replay/{pick()[0]}"),
        "search page (tenant, tool, status, 7 d)": lambda: get(
            "/v1/events", tenant=pick()[2], tool="salesforce", status="error", since="7d",
            limit=100),
        "agg: error rate per tool per minute, 24 h": lambda: get(
            "/v1/tools/health", since="24h", bucket_minutes=1, tenant=pick()[2]),
        "agg: same, all tenants": lambda: get("/v1/tools/health", since="24h",
                                              bucket_minutes=1),
        "agg: cost per success per workflow per day, 30 d": lambda: http.post(
            "/v1/sql", json={"sql": economics_sql, "parameters": {"t": pick()[2]}}),
        "agg: margins by workflow, 30 d, all tenants": lambda: get(
            "/v1/margins", by="workflow", since="30d"),
    }
    results = {name: timed(fn, args.iterations) for name, fn in cases.items()}
    http.close()
    api.stop()

    events_bytes = next(b for t, b, _ in sizes if t == "events")
    all_bytes = sum(b for _, b, _ in sizes)
    print(f"\nevents: {n:,} generated in {total_s:.0f} s; inserting them took {insert_s:.0f} s "
          f"({n / insert_s:,.0f} rows/s raw chdb insert incl. the materialized views)")
    print(f"storage: events {events_bytes / n * 1e6 / 2**20:.1f} MiB per million events; "
          f"all tables {all_bytes / n * 1e6 / 2**20:.1f} MiB per million")
    for table, size, parts in sizes:
        print(f"  {table:<22} {size / 2**20:9.1f} MiB  {parts:4d} parts")
    baseline = pct(results["raw: one run's rows (clickhouse-connect)"], 0.5)
    print(f"\n{'query':<52} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p50/raw':>8}")
    for name, samples in results.items():
        print(f"{name:<52} {pct(samples, .5):8.1f} {pct(samples, .95):8.1f} "
              f"{pct(samples, .99):8.1f} {pct(samples, .5) / baseline:8.1f}")
    print(f"\n({args.iterations} iterations each; mean of all lookups "
          f"{statistics.mean(results['run timeline (by run id)']):.1f} ms; "
          f"cores: {os.cpu_count()})")
    if args.json:
        print(json.dumps({
            "events": n, "raw_insert_rows_per_s": round(n / insert_s),
            "events_mib_per_million": round(events_bytes / n * 1e6 / 2**20, 1),
            "queries_ms": {name: {"p50": round(pct(v, .5), 1), "p95": round(pct(v, .95), 1),
                                  "p99": round(pct(v, .99), 1)} for name, v in results.items()},
            "raw_lookup_p50_ms": round(baseline, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
