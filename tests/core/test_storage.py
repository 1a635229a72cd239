"""The store's physical design on a real chdb engine: the materialized views stay exact
when the sink redelivers, a migration backfills a view created over existing events, and
retention settings reach the tables' TTLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.memory import MemoryLedger
from agentledger.producers.simulator import Simulator
from agentledger.queries import margins, operations
from agentledger.queries.common import ALL
from agentledger.schemas.ddl import table_ttl_days
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.services import open_store
from agentledger.sinks.migrate import migrate

pytestmark = pytest.mark.integration


def simulated_rows(runs: int, seed: int = 5) -> list[list[Any]]:
    ledgers: list[MemoryLedger] = []

    def make(identity: Any) -> MemoryLedger:
        ledgers.append(MemoryLedger(identity))
        return ledgers[-1]

    Simulator(make, seed=seed, tenants=("acme", "globex"), error_rate=0.2).run(runs)
    raws = [raw for ledger in ledgers for raw in ledger.take()]
    return [event_row(orjson.loads(raw), raw, 0, i) for i, raw in enumerate(raws)]


def figures(client: Any) -> dict[str, Any]:
    """What the views answer: margins, tool health, per-run summaries."""
    summaries = client.query(
        "SELECT run_id, any(workflow), max(last_seq), max(outcome), max(cost_usd), "
        "uniqExactMerge(tool_errors) FROM run_summaries GROUP BY run_id ORDER BY run_id"
    ).result_rows
    return {
        "margins": margins.margins(client, ALL, "workflow", None, None)["groups"],
        "models": margins.margins(client, ALL, "model", None, None)["groups"],
        "tools": operations.tool_health(client, ALL, None, None)["tools"],
        "summaries": summaries,
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data")
    client = open_store(settings)
    yield settings, client
    client.close()


def test_views_are_exact_when_the_sink_redelivers(store):
    _, client = store
    client.command("SYSTEM STOP MERGES events")  # keep the copies visible to count()
    rows = simulated_rows(150)
    client.insert("events", rows, column_names=EVENT_COLUMNS)
    once = figures(client)
    assert once["margins"] and once["tools"] and once["summaries"]
    # a crash before the commit: the same events arrive again, in other batches
    for i in range(0, len(rows), 97):
        client.insert("events", rows[i:i + 97], column_names=EVENT_COLUMNS)
    assert client.command("SELECT count() FROM events") == 2 * len(rows)
    twice = figures(client)
    assert twice["margins"] == once["margins"]
    assert twice["models"] == once["models"]
    assert twice["summaries"] == once["summaries"]
    for before, after in zip(once["tools"], twice["tools"], strict=True):
        counts = ("tool", "calls", "errors", "timeouts", "rejected", "error_rate")
        assert {k: after[k] for k in counts} == {k: before[k] for k in counts}
    finished = sum(1 for r in rows if r[EVENT_COLUMNS.index("event_type")] == "run.finished")
    assert sum(g["runs"] for g in twice["margins"]) == finished
    # merges change nothing either
    client.command("SYSTEM START MERGES events")
    for table in ("events", "run_summaries", "tool_health_minute", "daily_economics"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert figures(client)["margins"] == once["margins"]


def test_a_new_view_is_backfilled_from_the_events_already_stored(store):
    settings, client = store
    client.insert("events", simulated_rows(80), column_names=EVENT_COLUMNS)
    expected = figures(client)
    # an older store: the views and their tables did not exist yet
    for view in ("run_summaries", "tool_health_minute", "daily_economics"):
        client.command(f"DROP VIEW {view}_mv")
        client.command(f"DROP TABLE {view}")
    client.command("ALTER TABLE schema_migrations DELETE WHERE version IN (5, 6, 7) "
                   "SETTINGS mutations_sync = 2")
    applied = migrate(client_for(settings, database=False), db=settings.clickhouse_database,
                      ttl_days=settings.ttl_days())
    assert applied == ["run_summaries", "tool_health_minute", "daily_economics"]
    assert figures(client) == expected
    assert migrate(client, db=settings.clickhouse_database, ttl_days=settings.ttl_days()) == []


def test_retention_settings_are_applied_to_existing_tables(store):
    settings, client = store
    assert table_ttl_days(client, "agentledger")["events"] == 365
    shorter = Settings(data_dir=settings.data_dir, retention_days=30,
                       economics_retention_days=3650, health_retention_days=7)
    migrate(client, db="agentledger", ttl_days=shorter.ttl_days())
    ttl = table_ttl_days(client, "agentledger")
    assert (ttl["events"], ttl["daily_economics"], ttl["tool_health_minute"]) == (30, 3650, 7)
    assert ttl["rejected_events"] == settings.rejected_retention_days
    report = {t["table"]: t for t in operations.retention(client, ALL, "agentledger",
                                                          shorter.ttl_days())}
    assert report["events"]["applied_days"] == report["events"]["configured_days"] == 30
    # an event older than its TTL is dropped when TTLs are materialized
    old = simulated_rows(1)[0]
    old[EVENT_COLUMNS.index("ts")] = old[EVENT_COLUMNS.index("ts")].replace(year=2020)
    client.insert("events", [old], column_names=EVENT_COLUMNS)
    client.command("ALTER TABLE events MATERIALIZE TTL SETTINGS mutations_sync = 2")
    client.command("OPTIMIZE TABLE events FINAL")
    assert client.command("SELECT count() FROM events WHERE toYear(ts) = 2020") == 0
