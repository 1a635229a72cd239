"""The store process's memory while it serves a replay and an export (issue 21, item 9).

    .venv/bin/python bench/bench_store_memory.py [--replay-events 100000]
        [--export-rows 1000000] [--json]

Starts its own embedded store in a child process — chdb plus the real API, the process
``agentledger up`` calls the store — and lands, with the engine's own INSERT … SELECT from
one simulated run (the real SDK's events, materialized views firing as on ingest):

- one run of ``--replay-events`` events, replayed through ``GET /v1/replay/{run}``;
- ``--export-rows`` more events over many runs, exported through ``GET /v1/export``
  (JSONL, 100k-row pages, as ``agentledger export`` does).

It samples the child's RSS (psutil, every 20 ms) while idle, during the replay and during
the export, and, as the raw baseline of the same run, while the child reads the same data
unpaged with clickhouse-connect (the replay run's rows in one ``query``, the export's raw
in one ``raw_query``). The last line (with ``--json``) is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

MIB = 1024 * 1024


def _seed_run(client: Any) -> str:
    """One simulated run's events, inserted as the sink would; its run id."""
    import orjson

    from agentledger.producers.memory import MemoryLedger
    from agentledger.producers.simulator import Simulator
    from agentledger.schemas.event_row import EVENT_COLUMNS, event_row

    ledgers: list[MemoryLedger] = []

    def make(identity: Any) -> MemoryLedger:
        ledgers.append(MemoryLedger(identity, validate=False))
        return ledgers[-1]

    Simulator(make, seed=7, tenants=("acme",), error_rate=0.0).one_run(0)
    raws = [raw for ledger in ledgers for raw in ledger.take()]
    rows = [event_row(orjson.loads(raw), raw, 0, i) for i, raw in enumerate(raws)]
    client.insert("events", rows, column_names=list(EVENT_COLUMNS))
    return str(orjson.loads(raws[0])["run_id"])


def _multiply(client: Any, base_run: str, events: int, run_of: str) -> None:
    """``events`` copies of the base run's events, new ids and seqs, runs named by SQL."""
    from agentledger.schemas.event_row import EVENT_COLUMNS

    per = int(client.query("SELECT count() FROM events WHERE run_id = {r:String}",
                           parameters={"r": base_run}).result_rows[0][0])
    replaced = {"event_id": "generateUUIDv4(number)", "run_id": run_of,
                "seq": f"toUInt32(seq + (number + 1) * {per})",
                "ts": "ts + toIntervalMicrosecond(number)"}
    select = ", ".join(replaced.get(c, c) for c in EVENT_COLUMNS)
    batch = 50_000
    done = 0
    while done < events:
        copies = max(1, min(batch, events - done) // per)
        client.command(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) SELECT {select} FROM "
            f"(SELECT * FROM events WHERE run_id = '{base_run}') AS e CROSS JOIN "
            f"(SELECT number + {done // per} AS number FROM numbers({copies})) AS n")
        done += copies * per


def store(data_dir: str, replay_events: int, export_rows: int, out: Any, commands: Any) -> None:
    """The child: owns the store, lands the data, serves the API, runs raw baselines."""
    from agentledger.core.settings import Settings
    from agentledger.core.store import client_for
    from agentledger.services import open_store, start_api

    settings = Settings(data_dir=Path(data_dir))
    client = open_store(settings)
    base = _seed_run(client)
    _multiply(client, base, replay_events, f"'{base}-replay'")
    _multiply(client, base, export_rows, f"concat('{base}-x-', toString(number % 1000))")
    client.command("OPTIMIZE TABLE events FINAL")
    found = client.query("SELECT run_id = {r:String}, count() FROM events GROUP BY 1",
                         parameters={"r": f"{base}-replay"}).result_rows
    counts: dict[bool, int] = {bool(r[0]): int(r[1]) for r in found}
    api = start_api(settings, client_for(settings))
    out.put({"url": api.url, "key": (settings.run_dir / "api.key").read_text().strip(),
             "run": f"{base}-replay", "replay_events": int(counts.get(True, 0)),
             "total_events": int(sum(counts.values()))})
    while (command := commands.get()) != "stop":
        t0 = time.perf_counter()
        if command == "raw-replay":
            got = len(client.query("SELECT * FROM events WHERE run_id = {r:String}",
                                   parameters={"r": f"{base}-replay"}).result_rows)
        else:
            got = client.raw_query("SELECT raw FROM events FORMAT TSVRaw").count(b"\n")
        out.put({"rows": got, "seconds": time.perf_counter() - t0})
    api.stop()
    client.close()


class Sampler:
    """The peak RSS of one process, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.process.memory_info().rss
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    out, commands = ctx.Queue(), ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="bench-store-memory-") as tmp:
        child = ctx.Process(target=store, args=(tmp, args.replay_events, args.export_rows,
                                                out, commands))
        child.start()
        pid = child.pid
        assert pid is not None
        info = out.get(timeout=3600)
        headers = {"Authorization": f"Bearer {info['key']}"}
        print(f"landed {info['total_events']:,} events, {info['replay_events']:,} in the "
              "replayed run", file=sys.stderr)
        with Sampler(pid) as idle:
            # A bench, not a test: six seconds idle, past jemalloc's 5 s decay of the
            # pages the load dirtied; idle is the settled (lowest) level.
            time.sleep(6)
        rss_idle = min(idle.samples)

        t0 = time.perf_counter()
        replay_bytes = 0
        with Sampler(pid) as replay, httpx.stream(
                "GET", f"{info['url']}/v1/replay/{info['run']}", headers=headers,
                timeout=3600) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                replay_bytes += len(chunk)
        replay_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        exported, cursor = 0, None
        with Sampler(pid) as export, httpx.Client(timeout=3600) as http:
            while True:
                params: dict[str, Any] = {"format": "jsonl", "limit": 100_000}
                if cursor:
                    params["cursor"] = cursor
                page = http.get(f"{info['url']}/v1/export", params=params, headers=headers)
                page.raise_for_status()
                exported += int(page.headers["X-Export-Rows"])
                cursor = page.headers.get("X-Next-Cursor")
                if not cursor:
                    break
        export_s = time.perf_counter() - t0

        raw: dict[str, Any] = {}
        for command in ("raw-replay", "raw-export"):
            with Sampler(pid) as sampler:
                commands.put(command)
                done = out.get(timeout=3600)
            raw[command] = {**done, "rss_peak_mib": round(sampler.peak / MIB, 1),
                            "delta_mib": round((sampler.peak - rss_idle) / MIB, 1)}
        commands.put("stop")
        child.join(120)

    result = {
        "replay_events": info["replay_events"], "export_rows": exported,
        "total_events": info["total_events"],
        "rss_idle_mib": round(rss_idle / MIB, 1),
        "rss_peak_replay_mib": round(replay.peak / MIB, 1),
        "rss_peak_export_mib": round(export.peak / MIB, 1),
        "delta_replay_mib": round((replay.peak - rss_idle) / MIB, 1),
        "delta_export_mib": round((export.peak - rss_idle) / MIB, 1),
        "goal_delta_mib": 512,
        "replay_bytes": replay_bytes, "replay_s": round(replay_s, 2),
        "export_s": round(export_s, 2),
        "raw_baseline_unpaged": raw,
    }
    print(f"idle {result['rss_idle_mib']} MiB; replay peak +{result['delta_replay_mib']} MiB; "
          f"export peak +{result['delta_export_mib']} MiB (goal ≤ +512)", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
