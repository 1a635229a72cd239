"""The ledger API and its CLI over the real pipeline: margins against a hand computation,
search, export, health, retention and keys (the store: ``conftest.py``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentledger.queries import events
from agentledger.schemas.integrity import verify_chain
from tests.ledger_api.ledger_store import RATES, Store

pytestmark = pytest.mark.integration


# -- margins -------------------------------------------------------------------------------


def _hand_margins(events: list[dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
    """Runs, successes, cost and revenue in micro-dollars, computed from the Kafka events."""
    groups: dict[str, dict[str, int]] = {}
    for e in events:
        if e["event_type"] != "run.finished":
            continue
        body = e["body"]
        workflow = body["workflow"]
        success = body["outcome"] == "success"
        cost = round(body["totals"]["cost_usd"] * 1_000_000)
        rate = int(RATES.get((e["tenant"], workflow), Decimal(0)) * 1_000_000) if success else 0
        if key == "model":
            for model, usd in body["totals"]["cost_by_model"].items():
                part = round(usd * 1_000_000)
                g = groups.setdefault(model, {"runs": 0, "successes": 0, "cost": 0,
                                              "revenue": 0})
                g["runs"] += 1
                g["successes"] += success
                g["cost"] += part
                g["revenue"] += round(rate * part / cost) if cost else 0
            continue
        name = {"workflow": workflow, "tenant": e["tenant"], "day": e["ts"][:10]}[key]
        g = groups.setdefault(name, {"runs": 0, "successes": 0, "cost": 0, "revenue": 0})
        g["runs"] += 1
        g["successes"] += success
        g["cost"] += cost
        g["revenue"] += rate
    return groups


@pytest.mark.parametrize("by", ["workflow", "tenant", "day", "model"])
def test_margins_match_a_hand_computation_exactly(store: Store, by: str):
    for (tenant, workflow), rate in RATES.items():
        if by == "workflow":  # set once, through the CLI, with the operator key
            done = store.cli("revenue", "set", tenant, workflow, str(rate), "--from",
                             "2020-01-01", "--note", "contract 7")
            assert done.returncode == 0, done.stderr
    done = store.cli("margins", "--by", by, "--since", "30d", "--json")
    assert done.returncode == 0, done.stderr
    got = {g["key"]: g for g in json.loads(done.stdout)["groups"]}
    expected = _hand_margins(store.events, by)
    assert set(got) == set(expected)
    for name, hand in expected.items():
        g = got[name]
        assert (g["runs"], g["successes"], g["cost_micros"], g["revenue_micros"]) == (
            hand["runs"], hand["successes"], hand["cost"], hand["revenue"]), name
        assert g["gross_margin_usd"] == round((hand["revenue"] - hand["cost"]) / 1e6, 6)
        if hand["successes"]:
            assert g["cost_per_success_usd"] == round(hand["cost"] / hand["successes"] / 1e6, 6)
    readable = store.cli("margins", "--by", by)
    assert readable.returncode == 0 and "total" in readable.stdout
    assert next(iter(expected))[:6] in readable.stdout


# -- the other CLI answers -----------------------------------------------------------------


def test_search_filters_and_pages_without_gaps_or_repeats(store: Store):
    seen: list[str] = []
    cursor = None
    while True:
        args = ["search", "--tenant", "acme", "--type", "tool.result", "--limit", "37",
                "--json", "--since", "30d"]
        done = store.cli(*args, *(["--cursor", cursor] if cursor else []))
        assert done.returncode == 0, done.stderr
        page = json.loads(done.stdout)
        seen += [e["event_id"] for e in page["events"]]
        assert all(e["tenant"] == "acme" and e["event_type"] == "tool.result"
                   for e in page["events"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    expected = {e["event_id"] for e in store.events
                if e["tenant"] == "acme" and e["event_type"] == "tool.result"}
    assert len(seen) == len(set(seen)) and set(seen) == expected
    errors = store.get("/v1/events", "acme", status="error", q="timeout", limit=1000).json()
    assert all(e["status"] == "error" for e in errors["events"])
    bad = store.cli("search", "--since", "yesterday-ish")
    assert bad.returncode == 1 and "not a time" in bad.stderr and "Traceback" not in bad.stderr


def test_a_page_skips_redelivered_copies_however_many_there_are(store: Store):
    """A page reads the table in order and drops copies after (events.first_distinct):
    with six copies of every event, more than its first read holds, it reads further
    and still returns each event once, in order, and all of them when fewer remain."""
    client = store.client
    client.command("CREATE TABLE IF NOT EXISTS paging_copies AS events")
    client.command("TRUNCATE TABLE paging_copies")
    for _ in range(6):
        client.command("INSERT INTO paging_copies SELECT * FROM events "
                       "WHERE tenant = 'acme'")
    select = "SELECT event_id, ts FROM paging_copies WHERE tenant = {t:String}"
    # the reference: every matching row sorted, then one per event id
    distinct = [str(row[0]) for row in client.query(
        f"{select} ORDER BY ts DESC, event_id DESC LIMIT 1 BY event_id",
        parameters={"t": "acme"}).result_rows]
    assert sorted(distinct) == sorted(e["event_id"] for e in store.events
                                      if e["tenant"] == "acme")
    try:
        for count in (1, 37, len(distinct) + 5):
            page = events.first_distinct(client, select, "ts DESC, event_id DESC", count,
                                         {"t": "acme"})
            got = [str(row["event_id"]) for row in page]
            assert got == distinct[:count], count
    finally:
        client.command("DROP TABLE paging_copies")


def test_export_jsonl_verifies_and_parquet_has_every_column(store: Store, tmp_path: Path):
    import pyarrow.parquet as pq

    jsonl = tmp_path / "audit.jsonl"
    done = store.cli("export", "--since", "30d", "--tenant", "acme", "--page-rows", "200",
                     "-o", str(jsonl))
    assert done.returncode == 0, done.stderr
    exported = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    acme = [e for e in store.events if e["tenant"] == "acme"]
    assert len(exported) == len(acme) and {e["event_id"] for e in exported} == {
        e["event_id"] for e in acme}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in exported:
        by_run.setdefault(event["run_id"], []).append(event)
    tampered = set(store.runs("globex"))
    for run_id, run in by_run.items():
        assert run_id in tampered or verify_chain(sorted(run, key=lambda e: e["seq"])).ok
    parquet = tmp_path / "audit.parquet"
    done = store.cli("export", "--since", "30d", "--format", "parquet", "--page-rows", "500",
                     "-o", str(parquet))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(parquet)
    assert table.num_rows == store.client.command("SELECT uniqExact(event_id) FROM events")
    assert {"event_id", "ts", "tenant", "run_id", "cost_usd", "raw"} <= set(table.column_names)


def test_health_retention_and_keys(store: Store, tmp_path: Path):
    done = store.cli("health", "--json", "--since", "30d")
    # the fixture put both tenants' triage bots in read-only safe mode
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "degraded" and report["store"] == "ok"
    assert {s["scope"] for s in report["safe_modes"]} == {"acme/triage-bot",
                                                          "globex/triage-bot"}
    assert report["events"] == store.client.command("SELECT uniqExact(event_id) FROM events")
    assert {t["tool"] for t in report["tools"]} >= {"stripe", "zendesk", "salesforce"}
    scoped = store.cli("health", "--json", key="acme")
    assert {s["scope"] for s in json.loads(scoped.stdout)["safe_modes"]} == {"acme/triage-bot"}
    retention = store.cli("retention", "show", "--json")
    assert retention.returncode == 0, retention.stderr
    tables = {t["table"]: t for t in json.loads(retention.stdout)}
    assert tables["events"]["configured_days"] == tables["events"]["applied_days"] == 365
    assert tables["events"]["rows"] >= report["events"]
    denied = store.cli("retention", "show", key="acme")
    assert denied.returncode == 1 and "operator key" in denied.stderr
    created = store.cli("keys", "create", "ci-bot", "--tenant", "globex")
    assert created.returncode == 0, created.stderr
    listed = store.cli("keys", "list", "--json")
    assert "ci-bot" in {k["name"] for k in json.loads(listed.stdout)}
    assert created.stdout.strip() not in (store.settings.data_dir / "api-keys.yaml").read_text()
