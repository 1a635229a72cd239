"""The ledger API and its CLI over the real pipeline: replay bundles, timelines, and
verification of the stored hash chain (the store: ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from agentledger.schemas.integrity import event_hash, verify_chain
from tests.ledger_api.ledger_store import Store

pytestmark = pytest.mark.integration


# -- replay and verification ---------------------------------------------------------------


def test_replay_bundle_carries_every_item_in_order_and_verifies(store: Store, tmp_path: Path):
    run_id = store.full_run["run_id"]
    out = tmp_path / "bundle.json"
    done = store.cli("replay", run_id, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "chain verified" in done.stderr
    bundle = json.loads(out.read_text())
    assert bundle["verified"] is True and bundle["bundle_version"] == 1
    (run,) = bundle["runs"]
    # the run's ordered events, exactly as produced
    assert [e["event_id"] for e in run["events"]] == store.full_run["event_ids"]
    assert [e["seq"] for e in run["events"]] == list(range(len(run["events"])))
    produced = {e["event_id"]: e for e in store.events}
    assert run["events"] == [produced[i] for i in store.full_run["event_ids"]]
    assert verify_chain(run["events"]).ok
    # inputs hash and reference, prompt and policy versions
    started = run["events"][0]["body"]
    assert run["inputs"]["inputs_hash"] == started["inputs_hash"]
    assert run["inputs"]["input_ref"] == "s3://inputs/T-1"
    assert (run["inputs"]["prompt_template"], run["inputs"]["prompt_version"]) == ("refund", "9")
    assert run["inputs"]["policy_version"] == "12"
    # retrieved document hashes and index version
    (retrieval,) = run["retrievals"]
    assert retrieval["index_version"] == "kb-2026-11"
    assert retrieval["doc_ids"] == ["kb-7", "kb-9"] and len(retrieval["doc_hashes"]) == 2
    # tool schema hashes and versions, each call with its result, in order
    assert [(t["tool"], t["action"], t["tool_version"], t["status"]) for t in run["tools"]] == [
        ("stripe", "get_charge", "2.3.1", "ok"), ("stripe", "create_refund", "2.3.1", "ok")]
    assert all(len(t["schema_hash"]) == 64 and len(t["args_hash"]) == 64 for t in run["tools"])
    assert run["tools"][1]["idempotency_key"] == "T-1:refund"
    assert "sk-live-secret" not in out.read_text()
    # models and versions, the policy decision and the approval, the outcome
    assert [(m["model"], m["model_version"]) for m in run["models"]] == [
        ("gpt-4o-mini", "2024-07-18"), ("claude-haiku", "4.5")]
    assert [p["decision"] for p in run["policy_decisions"]] == ["escalate"]
    assert [(a["event_type"], a.get("decision")) for a in run["approvals"]] == [
        ("approval.requested", None), ("approval.resolved", "approved")]
    assert run["outcome"]["outcome"] == "success"
    seqs = [run["retrievals"][0]["seq"], run["models"][0]["seq"], run["tools"][0]["seq"],
            run["policy_decisions"][0]["seq"], run["approvals"][0]["seq"],
            run["approvals"][1]["seq"], run["tools"][1]["seq"], run["models"][1]["seq"]]
    assert seqs == sorted(seqs)
    assert run["verification"]["ok"] and run["verification"]["complete"]


def test_trace_timeline_tells_the_run_in_order(store: Store):
    run_id = store.full_run["run_id"]
    trace_id = next(e["trace_id"] for e in store.events if e["run_id"] == run_id)
    done = store.cli("trace", trace_id, "--json")
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["run_id"] == run_id and run["outcome"] == "success"
    assert [s["phase"] for s in run["steps"]] == [
        "input", "retrieval", "model", "tool", "tool", "policy", "approval", "approval",
        "tool", "tool", "model", "outcome"]
    offsets = [s["offset_ms"] for s in run["steps"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert run["steps"][4]["latency_ms"] == 80
    assert run["cost_usd"] == pytest.approx(sum(s["cost_usd"] or 0 for s in run["steps"]))
    readable = store.cli("trace", run_id)
    assert readable.returncode == 0 and "stripe" in readable.stdout


def _tamper(store: Store, how: str) -> tuple[str, int, str]:
    """Damage one globex run in place; returns (run_id, first broken seq, its event id)."""
    long_runs = [r for r in store.runs("globex")
                 if sum(e["run_id"] == r for e in store.events) >= 5]
    run_id = long_runs[["modify", "delete", "insert", "swap", "column", "truncate"].index(how)]
    run = sorted((e for e in store.events if e["run_id"] == run_id), key=lambda e: e["seq"])
    client, sync = store.client, {"mutations_sync": 2}
    target = run[2]
    if how == "modify":
        forged = {**target, "principal": "mallory"}
        client.command("ALTER TABLE events UPDATE raw = {raw:String} WHERE event_id = {id:UUID}",
                       parameters={"raw": orjson.dumps(forged).decode(), "id": target["event_id"]},
                       settings=sync)
        return run_id, 2, target["event_id"]
    if how == "delete":
        client.command("ALTER TABLE events DELETE WHERE event_id = {id:UUID}",
                       parameters={"id": target["event_id"]}, settings=sync)
        return run_id, 3, run[3]["event_id"]
    if how == "insert":
        # A forged event chained correctly onto seq 2, claiming seq 3: the attacker knows
        # the algorithm; the original seq 3 no longer follows what precedes it.
        forged = {**run[3], "event_id": "01930000-0000-7000-8000-000000000001",
                  "ts": run[3]["ts"], "prev_hash": target["hash"]}
        forged["hash"] = event_hash(forged, target["hash"])
        from agentledger.schemas.event_row import EVENT_COLUMNS, event_row

        raw = orjson.dumps(forged)
        client.insert("events", [event_row(forged, raw, 0, 0)], column_names=EVENT_COLUMNS)
        return run_id, 3, ""
    if how == "swap":
        a, b = run[2], run[3]
        for event, seq in ((a, 3), (b, 2)):
            client.command("ALTER TABLE events UPDATE seq = {seq:UInt32} WHERE event_id = "
                           "{id:UUID}", parameters={"seq": seq, "id": event["event_id"]},
                           settings=sync)
        return run_id, 3, b["event_id"]
    if how == "column":
        client.command("ALTER TABLE events UPDATE cost_usd = cost_usd + 100, status = 'ok' "
                       "WHERE event_id = {id:UUID}", parameters={"id": target["event_id"]},
                       settings=sync)
        return run_id, 2, target["event_id"]
    # truncate: the last event deleted; the chain of what is left still holds
    last = run[-1]
    client.command("ALTER TABLE events DELETE WHERE event_id = {id:UUID}",
                   parameters={"id": last["event_id"]}, settings=sync)
    return run_id, last["seq"], ""


@pytest.mark.parametrize("how", ["modify", "delete", "insert", "swap", "column", "truncate"])
def test_verify_names_the_first_broken_link(store: Store, how: str):
    run_id, broken_seq, broken_id = _tamper(store, how)
    done = store.cli("verify", run_id, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["ok"] is False and run["problem"]
    if how == "insert":
        # the forged and the original seq 3 both claim seq 3: whichever sorts second breaks
        assert run["broken_seq"] == 3 and run["broken_event_id"], run
    else:
        assert run["broken_seq"] == broken_seq, run
        if broken_id:
            assert run["broken_event_id"] == broken_id, run
    human = store.cli("verify", run_id)
    assert human.returncode == 1 and "BROKEN" in human.stdout
    if broken_id:
        assert broken_id in human.stdout
    # other runs are untouched
    intact = store.cli("verify", store.runs("acme")[0])
    assert intact.returncode == 0 and ": ok," in intact.stdout
