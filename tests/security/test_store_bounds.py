"""Issue 21, item 9: replay and export read in bounded pages and still return everything.

One real chdb store and API per module. The memory itself is measured by
``bench/bench_store_memory.py``; here the pages are made tiny so that paging, cutting
by bytes and resuming are exercised on a small store, and the answers are compared with
what was stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.memory import MemoryLedger
from agentledger.producers.simulator import Simulator
from agentledger.queries import audit_export, replay
from agentledger.queries.common import ALL
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.services import ApiServer, open_store, start_api


@dataclass
class Stack:
    server: ApiServer
    client: Any
    key: str
    runs: dict[str, list[dict[str, Any]]]  # run id → its events, as produced

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.server.url + path, params=params, timeout=120,
                         headers={"Authorization": f"Bearer {self.key}"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("bounds")) / "data")
    client = open_store(settings)
    ledgers: list[MemoryLedger] = []

    def make(identity: Any) -> MemoryLedger:
        ledgers.append(MemoryLedger(identity, validate=False))
        return ledgers[-1]

    simulator = Simulator(make, seed=5, tenants=("acme", "globex"), error_rate=0.1)
    for n in range(60):
        simulator.one_run(n)
    raws = [raw for ledger in ledgers for raw in ledger.take()]
    events = [orjson.loads(raw) for raw in raws]
    client.insert("events", [event_row(e, raw, 0, i) for i, (e, raw) in
                             enumerate(zip(events, raws, strict=True))],
                  column_names=list(EVENT_COLUMNS))
    runs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        runs.setdefault(event["run_id"], []).append(event)
    server = start_api(settings, client_for(settings))
    try:
        yield Stack(server, client, (settings.run_dir / "api.key").read_text().strip(), runs)
    finally:
        server.stop()
        client.close()


def test_an_export_cut_by_bytes_resumes_to_every_row(stack: Stack) -> None:
    expected = {e["event_id"] for events in stack.runs.values() for e in events}
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        page = audit_export.export_page(stack.client, ALL, since=None, until=None,
                                        fmt="jsonl", cursor=cursor, limit=100_000,
                                        page_bytes=20_000)
        pages += 1
        lines = page.data.splitlines()
        assert len(lines) == page.rows
        seen += [orjson.loads(line)["event_id"] for line in lines]
        cursor = page.next_cursor
        if not cursor:
            break
    assert pages > 5, f"a 20 kB budget over {len(expected)} events made only {pages} pages"
    assert len(seen) == len(set(seen)) and set(seen) == expected


def test_a_large_export_through_the_api_has_the_right_count(stack: Stack) -> None:
    expected = sum(len(events) for events in stack.runs.values())
    first = stack.get("/v1/export", limit=100_000)
    assert first.status_code == 200
    assert int(first.headers["X-Export-Total"]) == expected
    rows, cursor = int(first.headers["X-Export-Rows"]), first.headers.get("X-Next-Cursor")
    while cursor:
        page = stack.get("/v1/export", limit=100_000, cursor=cursor)
        rows += int(page.headers["X-Export-Rows"])
        cursor = page.headers.get("X-Next-Cursor")
    assert rows == expected


def test_run_pages_are_bounded_and_lose_nothing(stack: Stack) -> None:
    run_id, events = max(stack.runs.items(), key=lambda item: len(item[1]))
    pages = list(replay.run_pages(stack.client, ALL, run_id, run_id, page_rows=3))
    assert all(len(p) <= 3 for p in pages) and len(pages) >= len(events) // 3
    assert [s.event["event_id"] for p in pages for s in p] == [e["event_id"] for e in events]
    one_each = list(replay.run_pages(stack.client, ALL, run_id, run_id, page_bytes=1))
    assert all(len(p) == 1 for p in one_each) and len(one_each) == len(events)


def test_the_streamed_replay_carries_the_whole_run_and_verifies(stack: Stack) -> None:
    run_id, events = max(stack.runs.items(), key=lambda item: len(item[1]))
    response = stack.get(f"/v1/replay/{run_id}")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["verified"] is True and len(bundle["runs"]) == 1
    run = bundle["runs"][0]
    assert run["events"] == events
    assert run["verification"]["ok"] and run["verification"]["events"] == len(events)
    assert len(run["tools"]) == sum(e["event_type"] == "tool.call" for e in events)
    assert stack.get("/v1/replay/no-such-run").status_code == 404
    check = stack.get(f"/v1/verify/{run_id}").json()
    assert check["ok"] and check["runs"][0]["events"] == len(events)
