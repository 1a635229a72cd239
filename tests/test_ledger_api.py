"""The ledger API and its CLI over events that went through the real pipeline.

One module-wide store: a seeded simulation for two tenants plus one hand-written run with
every kind of step, produced to a real Tansu broker, landed by the real sink in a real chdb
store, served by the real API on a loopback port (published like `agentledger up` does,
so CLI subprocesses find it).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.services import ApiServer, open_store, start_api
from core import discovery
from core.kafka import client_config, default_topics, ensure_topics
from core.settings import Settings
from core.store import client_for
from producers.emitter import AgentIdentity, Ledger
from producers.simulator import Simulator
from schemas import topics
from schemas.integrity import event_hash, verify_chain
from schemas.signals import ControlSignal
from tests.conftest import CLI, consume_all
from tests.sinkutil import run_sink

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex")
RATES = {("acme", "ticket_triage"): Decimal("0.50"), ("acme", "crm_update"): Decimal("1.25"),
         ("acme", "refund_with_approval"): Decimal("3.00"),
         ("globex", "ticket_triage"): Decimal("0.40")}


@dataclass
class Store:
    settings: Settings
    api: ApiServer
    client: Any
    keys: dict[str, str]
    events: list[dict[str, Any]]  # every event, as consumed back from Kafka
    full_run: dict[str, Any]
    env: dict[str, str]

    def get(self, path: str, key: str | None = "acme", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.get(self.api.url + path, params=params, headers=headers, timeout=60)

    def cli(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if key:
            env["AGENTLEDGER_API_KEY"] = self.keys[key]
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                              timeout=120)

    def runs(self, tenant: str) -> list[str]:
        return sorted({e["run_id"] for e in self.events if e["tenant"] == tenant
                       and e["event_type"] == "run.finished"})


def _full_run(bootstrap: str) -> dict[str, Any]:
    """One run with inputs, a retrieval, model calls, tool calls, a policy escalation and an
    approval: everything a replay bundle must carry."""
    ident = AgentIdentity(tenant="acme", agent="refund-agent", agent_version="3.1.0",
                          principal="svc-refund")
    with Ledger.connect(bootstrap, ident) as led, led.run(
            "refund_with_approval", inputs={"ticket": "T-1", "amount": 250},
            input_ref="s3://inputs/T-1", prompt_template="refund", prompt_version="9",
            policy_version="12", max_cost_usd=1.0, on_behalf_of="alice") as run:
        run.retrieval(source="kb", index_version="kb-2026-11",
                      documents={"kb-7": "refund policy", "kb-9": "limits"})
        run.model_call(provider="openai", model="gpt-4o-mini", model_version="2024-07-18",
                       role="planner", tokens_in=900, tokens_out=120, latency_ms=800)
        with run.tool_call("stripe", "get_charge", mode="read", args={"id": "ch_1"},
                           tool_version="2.3.1", schema={"v": 2}) as call:
            call.result("ok", latency_ms=80)
        run.policy_decision(policy_id="refund-limit", policy_version="3", rule="amount > 100",
                            decision="escalate", action="refund 250 USD")
        run.approval_requested(approver="support-lead", action="refund 250 USD")
        run.approval_resolved(approver="support-lead", decision="approved", latency_ms=42_000)
        with run.tool_call("stripe", "create_refund", mode="write",
                           args={"id": "ch_1", "amount": 250, "api_key": "sk-live-secret"},
                           tool_version="2.3.1", schema={"v": 2},
                           idempotency_key="T-1:refund") as call:
            call.result("ok", latency_ms=120, side_effect={"resource": "stripe/ch_1",
                                                           "op": "refund"}, verified=True)
        run.model_call(provider="anthropic", model="claude-haiku", model_version="4.5",
                       role="executor", tokens_in=300, tokens_out=80, latency_ms=400)
    return {"run_id": run.run_id, "event_ids": list(run.event_ids)}


def _control_signals(bootstrap: str) -> int:
    from confluent_kafka import Producer

    producer = Producer(client_config(bootstrap, "producer"))
    now = dt.datetime.now(dt.UTC)
    for tenant in TENANTS:
        signal = ControlSignal(kind="safe_mode", scope=f"{tenant}/triage-bot",
                               rule="tool-error-rate", state="read_only",
                               previous_state="normal", version=1, ts=now,
                               reason=f"{tenant} errors", policy_version="1")
        producer.produce(topics.CONTROL, signal.to_json(), signal.key.encode())
    assert producer.flush(15) == 0
    return len(TENANTS)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    data = tmp_path_factory.mktemp("ledger")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.3)
        keys = {"acme": new_key(), "globex": new_key()}
        for tenant, key in keys.items():
            append_entry(settings, entry_for(f"{tenant}-reader", key, [tenant]))

        ledgers: list[Ledger] = []

        def make(ident: AgentIdentity) -> Ledger:
            ledgers.append(Ledger.connect(broker.bootstrap, ident))
            return ledgers[-1]

        result = Simulator(make, seed=11, tenants=TENANTS, error_rate=0.1).run(160)
        full = _full_run(broker.bootstrap)
        signals = _control_signals(broker.bootstrap)
        produced = result.events + len(full["event_ids"])
        events = [orjson.loads(m.value()) for m in
                  consume_all(broker.bootstrap, topics.EVENTS, produced)]
        run_sink(settings, produced + signals)

        client = open_store(settings)
        api = start_api(settings, client_for(settings))  # mints the operator key
        discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
        keys["operator"] = (settings.run_dir / "api.key").read_text().strip()
        env = {**__import__("os").environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap}
        try:
            yield Store(settings, api, client, keys, events, full, env)
        finally:
            discovery.withdraw(settings, discovery.STORE_FILE)
            api.stop()
            client.close()


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
        from schemas.event_row import EVENT_COLUMNS, event_row

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


# -- tenant isolation and hostile input ----------------------------------------------------


def _v1_get_routes(store: Store) -> list[str]:
    app = store.api.server.config.app
    return sorted(r.path for r in app.routes
                  if r.path.startswith("/v1/") and "GET" in getattr(r, "methods", ()))


def _probe_paths(store: Store) -> dict[str, dict[str, Any]]:
    globex_run = store.runs("globex")[-1]
    globex_trace = next(e["trace_id"] for e in store.events if e["run_id"] == globex_run)
    globex_approval = next(e["body"]["approval_id"] for e in store.events
                           if e["tenant"] == "globex" and e["event_type"] == "approval.requested")
    return {
        "/v1/events": {"limit": 1000},
        f"/v1/timeline/{globex_run}": {},
        f"/v1/replay/{globex_trace}": {},
        f"/v1/verify/{globex_run}": {},
        "/v1/tools/health": {"since": "30d"},
        "/v1/control/history": {},
        "/v1/control/state": {},
        "/v1/control/stream": {"tenant": "globex"},  # refused before it streams
        "/v1/control/explain": {"scope": "acme/triage-bot"},  # globex's: 403 (asserted below)
        "/v1/control/results": {"since": "30d"},
        "/v1/watch": {},
        "/v1/margins": {"by": "tenant", "since": "30d"},
        "/v1/revenue": {},
        "/v1/export": {"limit": 100_000},
        "/v1/health": {},
        "/v1/retention": {},
        "/v1/sink": {},
        "/v1/approvals": {"since": "30d"},
        "/v1/approvals/stats": {"since": "30d", "by": "tenant"},
        f"/v1/approvals/{globex_approval}": {},
    }


def test_a_tenant_key_sees_nothing_of_another_tenant(store: Store):
    probes = _probe_paths(store)
    for template in _v1_get_routes(store):  # a new endpoint must get a probe here
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        assert any(pattern.match(p) for p in probes), f"no isolation probe for {template}"
    globex_ids = {e["run_id"] for e in store.events if e["tenant"] == "globex"}
    for path, params in probes.items():
        response = store.get(path, "acme", **params)
        assert response.status_code in (200, 403, 404), (path, response.text)
        text = response.text.replace(path.rsplit("/", 1)[-1], "")  # a 404 echoes the id
        assert "globex" not in text, f"{path} leaked globex rows"
        assert not any(run_id in text for run_id in globex_ids), path
        if path == "/v1/export":
            lines = [orjson.loads(line) for line in text.splitlines()]
            assert lines and {e["tenant"] for e in lines} == {"acme"}
        if path == "/v1/margins":
            assert {g["key"] for g in response.json()["groups"]} == {"acme"}
        # no key → 401; an unknown key → 401; asking for the other tenant → 403
        assert store.get(path, None, **params).status_code == 401
        bogus = httpx.get(store.api.url + path, params=params, timeout=30,
                          headers={"X-API-Key": "al_not-a-key"})
        assert bogus.status_code == 401
        if path in ("/v1/events", "/v1/margins", "/v1/control/state", "/v1/export"):
            assert store.get(path, "acme", tenant="globex", **params).status_code == 403
    assert store.get("/v1/control/explain", "acme", scope="globex/triage-bot").status_code \
        == 403
    # the other tenant's own key does see its rows
    mine = store.get("/v1/events", "globex", limit=10).json()["events"]
    assert mine and {e["tenant"] for e in mine} == {"globex"}
    # raw SQL and store metadata are for operator keys only
    sql = httpx.post(store.api.url + "/v1/sql", json={"sql": "SELECT 1"}, timeout=30,
                     headers={"Authorization": f"Bearer {store.keys['acme']}"})
    assert sql.status_code == 403
    assert store.get("/v1/retention", "operator").status_code == 200


INJECTIONS = [
    "' OR 1=1 --", "acme' OR tenant = 'globex", "globex", "%", "\\", "\x00",
    "1; DROP TABLE events", "{tenant:String}", "🙂" * 200, "a" * 5000, "-1", "9999-99-99",
]


def test_injection_and_garbage_are_4xx_or_empty_never_500_or_leaks(store: Store):
    acme_run = store.runs("acme")[0]
    spec = store.get("/openapi.json", None).json()["paths"]
    seen = set()
    for path in ("/v1/events", "/v1/tools/health", "/v1/control/history", "/v1/margins",
                 "/v1/export", "/v1/control/state"):
        params = [p["name"] for p in spec[path]["get"]["parameters"] if p["in"] == "query"]
        assert params, path
        for param in params:
            for value in INJECTIONS:
                response = store.get(path, "acme", **{param: value})
                seen.add(response.status_code)
                assert response.status_code in (200, 400, 403, 404, 422), (
                    path, param, value, response.status_code, response.text[:300])
                assert "globex" not in response.text.replace(value, ""), (path, param, value)
                if response.status_code >= 400:
                    assert response.json()["detail"], (path, param)
    for value in INJECTIONS:
        for prefix in ("/v1/timeline/", "/v1/replay/", "/v1/verify/"):
            response = store.get(prefix + quote(value, safe=""), "acme")
            assert response.status_code in (400, 404, 422), (prefix, value, response.text)
    assert store.get(f"/v1/timeline/{acme_run}", "acme").status_code == 200
    assert {400, 422} & seen and 200 in seen
    # the store is intact after all of that
    count = store.get("/v1/events", "operator", limit=1).status_code
    assert count == 200
    assert store.client.command("SELECT count() FROM events") > 0


def test_openapi_fuzzing_finds_no_server_error_and_no_leak(store: Store):
    """Schemathesis against the served OpenAPI document, with a tenant key: every operation,
    a bounded number of generated requests each (positive and negative data)."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(store.api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {store.keys['acme']}"}
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    def fuzzer(strategy: Any) -> Any:
        @hypothesis_settings(max_examples=20, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            if "parquet" in response.headers.get("content-type", [""])[0]:
                import pyarrow.parquet as pq

                tenants = set(pq.read_table(io.BytesIO(response.content))["tenant"].to_pylist())
                assert tenants <= {"acme"}
                return
            assert '"tenant":"globex"' not in response.text
            assert "globex errors" not in response.text

        return fuzz

    for operation in operations:
        fuzzer(operation.as_strategy())()
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert set(statuses) == {op.label for op in operations}


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
