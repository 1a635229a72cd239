"""`agentledger control backtest` over a big store: read + decide time, end to end.

    .venv/bin/python bench/bench_backtest.py [--events 10000000] [--json]

A fresh chdb store gets ``--events`` events by one INSERT ... SELECT (a quarter of them
``tool.result``: 7 tenants x 53 agents x 11 tools, 2 % errors, one event per 20 ms over
the last day); the real API serves it on loopback, and the command's own runner
(:func:`agentledger.cli.control.run_backtest`, 100,000 results per page) replays every
tool result through the default policy. Baseline in the same run: reading the first page
alone, and deciding it alone (pure code, no I/O).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentledger.api_client import LedgerClient
from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.cli.control import run_backtest
from agentledger.core.settings import Settings
from agentledger.services import open_store, start_api
from agentledger.streams.backtest import Backtest
from agentledger.streams.control_policy import load_policy

PAGE = 100_000


def fill(client: object, events: int) -> float:
    started = time.perf_counter()
    client.command(  # type: ignore[attr-defined]
        "INSERT INTO agentledger.events (event_id, event_type, ts, tenant, agent, tool, "
        "status, run_id) SELECT generateUUIDv4(), "
        "if(number % 4 = 0, 'tool.result', 'model.call'), "
        "toDateTime64(now64(6) - INTERVAL 1 DAY, 6) + toIntervalMicrosecond(number * 20000), "
        "concat('t', toString(number % 7)), concat('a', toString(number % 53)), "
        "concat('tool', toString(number % 11)), if(rand() % 100 < 2, 'error', 'ok'), "
        f"toString(number) FROM numbers({int(events)})")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", kafka_bootstrap="127.0.0.1:1")
        client = open_store(settings)
        filled = fill(client, args.events)
        key = new_key()
        api = start_api(settings, client, keys=KeyRing([entry_for("bench", key, ["*"])]),
                        host="127.0.0.1", port=0)
        try:
            with LedgerClient(api.url, key) as ledger:
                t = time.perf_counter()
                page = ledger.get("/v1/control/results", since="3d", limit=PAGE)["results"]
                read_page = time.perf_counter() - t
                t = time.perf_counter()
                one = Backtest(load_policy())
                one.feed(page)
                one.finish()
                decide_page = time.perf_counter() - t
                t = time.perf_counter()
                report = run_backtest(ledger, load_policy(), since="3d", page=PAGE)
                total = time.perf_counter() - t
        finally:
            api.stop()
    figures = {"events": args.events, "tool_results": report["results"],
               "backtest_s": round(total, 1), "fill_s": round(filled, 1),
               "read_one_page_s": round(read_page, 2),
               "decide_one_page_s": round(decide_page, 2),
               "results_per_s": round(report["results"] / total)}
    print(f"{args.events:,} stored events ({report['results']:,} tool results): backtest "
          f"{total:.1f} s end to end ({figures['results_per_s']:,} results/s); one page of "
          f"{PAGE:,}: read {read_page:.2f} s, decide {decide_page:.2f} s")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
