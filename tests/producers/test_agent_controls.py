"""Issue 24, part 3: the agent-side controls from the catalog, against a real Tansu broker,
the real sink into a real chdb store and the ledger API on a loopback port.

- retries with full-jitter backoff reuse the call's idempotency key, each attempt recorded;
- a timeout bounds the call (sync and async) and is recorded ``status=timeout``;
- a read-back that fails marks the result unverified, and tool health and margins show
  the verified-write rate;
- schema-invalid arguments are refused naming the field (SDK and ``POST /v1/gate/check``);
- ``ask_user_to_confirm``: a run over budget pauses for its end user, who answers
  through the API; the run resumes on yes and stops on no.

One stack for the module; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.controls import Retryable, ToolControls, ToolTimeout, backoff
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import ToolDenied, ToolGuard
from agentledger.producers.gate import DEFAULT_DIR, Gate
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas import topics
from agentledger.schemas.signals import EXCEEDED, ControlSignal, run_scope
from agentledger.services import ApiServer, start_api
from tests.helpers import wait_for
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration

AGENT = "refund-agent"


@dataclass
class Stack:
    settings: Settings
    sink: SinkThread
    api: ApiServer
    keys: dict[str, str]
    ledger_key: signing.LedgerKey
    ledger: Ledger
    gate: Gate

    def call(self, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.api.url}{path}", timeout=60,
                             headers={"Authorization": f"Bearer {self.keys[key]}"}, **kw)

    def rows(self, sql: str, **params: object) -> list[tuple]:
        return self.sink.query(sql, **params)

    def landed(self, run_id: str, n: int) -> None:
        self.ledger.flush(10)
        wait_for(lambda: self.rows("SELECT count() FROM events FINAL WHERE run_id = "
                                   "{r:String}", r=run_id)[0][0] >= n, 60,
                 what=f"{n} events of run {run_id}")


def _policy(root: Path) -> Path:
    """The default policy with controls and a strict schema on stripe refunds."""
    shutil.copytree(DEFAULT_DIR, root)
    catalog = yaml.safe_load((root / "catalog.yaml").read_text())
    stripe = catalog["tools"]["stripe"]["actions"]
    stripe["create_refund"].update(
        retries=3, backoff_s=0.001, backoff_max_s=0.01, retry_on=["ConnectionError", 503],
        schema={"type": "object", "required": ["charge", "amount"],
                "additionalProperties": False,
                "properties": {"charge": {"type": "string"},
                               "amount": {"type": "integer", "minimum": 1}}})
    stripe["get_charge"] = {"mode": "read", "risk": "low", "timeout_s": 0.2}
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("controls")
    with EmbeddedBroker() as embedded, pytest.MonkeyPatch.context() as mp:
        ensure_topics(client_config(embedded.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=tmp / "data", kafka_bootstrap=embedded.bootstrap,
                            sink_batch_seconds=0.3, gate_stale_after_s=3600.0)
        mp.setenv("AGENTLEDGER_KAFKA_BOOTSTRAP", embedded.bootstrap)
        mp.setenv("AGENTLEDGER_DATA_DIR", str(settings.data_dir))
        mp.setenv("AGENTLEDGER_LEDGER_KEY_DIR", str(signing.key_dir(settings)))
        key = signing.ledger_key(settings)
        keys = {name: new_key() for name in ("agent", "alice", "reader")}
        ring = KeyRing([
            entry_for(f"{AGENT}@acme", keys["agent"], ["acme"], agents=[AGENT]),
            entry_for("alice", keys["alice"], ["acme"], roles=["user:alice"]),
            entry_for("acme-reader", keys["reader"], ["acme"]),
        ])
        ledger = Ledger.connect(embedded.bootstrap, AgentIdentity(
            tenant="acme", agent=AGENT, agent_version="1", principal="svc-refunds"))
        with SinkThread(settings) as sink:
            api = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1",
                            port=0)
            try:
                yield Stack(settings, sink, api, keys, key, ledger,
                            Gate.load(_policy(tmp / "policy")))
            finally:
                ledger.close(10)
                desk = getattr(api.server.config.app.state, "approvals", None)
                if desk is not None:
                    desk.close()
                api.stop()


def test_full_jitter_backoff_stays_under_its_growing_cap() -> None:
    controls = ToolControls(retries=5, backoff_s=0.1, backoff_max_s=0.5)
    rng = random.Random(7)
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        pauses = [backoff(attempt, controls, rng) for _ in range(200)]
        assert all(0 <= p <= cap for p in pauses), (attempt, max(pauses))
        assert max(pauses) > cap * 0.8, "full jitter spans the whole [0, cap] range"


def test_retries_reuse_the_idempotency_key(stack: Stack) -> None:
    guard = ToolGuard(stack.gate)
    seen: list[tuple[int, str | None]] = []

    class Unavailable(Exception):
        status_code = 503

    failures: list[Exception] = [Retryable("flaky"), ConnectionError("reset"),
                                  Unavailable("busy")]

    def refund(ctx: Any) -> str:
        seen.append((ctx.attempt, ctx.idempotency_key))
        if failures:
            raise failures.pop(0)
        return "re_1"

    with stack.ledger.run("refunds") as run:
        done = guard.invoke(run, "stripe", "create_refund", refund, mode="write",
                            args={"charge": "ch_1", "amount": 50},
                            idempotency_key="ch_1:refund")
        attempts: list[int] = []
        with pytest.raises(ValueError):  # not retryable: one attempt, then raised
            guard.invoke(run, "stripe", "create_refund",
                         lambda ctx: attempts.append(ctx.attempt) or _raise(ValueError("no")),
                         mode="write", args={"charge": "ch_2", "amount": 5},
                         idempotency_key="ch_2:refund")
    assert done == "re_1" and attempts == [1]
    assert seen == [(n, "ch_1:refund") for n in (1, 2, 3, 4)]
    stack.landed(run.run_id, len(run.event_ids))
    calls = stack.rows(
        "SELECT JSONExtractInt(body, 'attempt'), JSONExtractString(body, 'idempotency_key') "
        "FROM events FINAL WHERE run_id = {r:String} AND event_type = 'tool.call' "
        "ORDER BY seq", r=run.run_id)
    assert calls == [(n, "ch_1:refund") for n in (1, 2, 3, 4)] + [(1, "ch_2:refund")]
    results = stack.rows(
        "SELECT JSONExtractInt(body, 'attempt'), status, error_type FROM events FINAL "
        "WHERE run_id = {r:String} AND event_type = 'tool.result' ORDER BY seq",
        r=run.run_id)
    assert results == [(1, "error", "Retryable"), (2, "error", "ConnectionError"),
                       (3, "error", "Unavailable"), (4, "ok", ""), (1, "error", "ValueError")]


def _raise(exc: Exception) -> Any:
    raise exc


def test_a_timeout_bounds_the_call_and_is_recorded(stack: Stack) -> None:
    guard = ToolGuard(stack.gate)
    release = threading.Event()

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    try:
        with stack.ledger.run("lookups") as run:
            with pytest.raises(ToolTimeout) as sync_timeout:
                guard.invoke(run, "stripe", "get_charge", lambda ctx: release.wait(30),
                             mode="read", args={"id": "ch_1"})
            with guard.call(run, "stripe", "get_charge", mode="read",
                            args={"id": "ch_2"}) as ctx, pytest.raises(ToolTimeout):
                asyncio.run(ctx.ainvoke(hang))
            with guard.call(run, "stripe", "get_charge", mode="read",
                            args={"id": "ch_3"}) as ctx:
                assert ctx.invoke(lambda: "fast") == "fast"
    finally:
        release.set()
    assert isinstance(sync_timeout.value, TimeoutError)
    assert sync_timeout.value.timeout_s == 0.2
    stack.landed(run.run_id, len(run.event_ids))
    statuses = stack.rows("SELECT status, error_type FROM events FINAL WHERE run_id = "
                          "{r:String} AND event_type = 'tool.result' ORDER BY seq",
                          r=run.run_id)
    assert statuses == [("timeout", "ToolTimeout"), ("timeout", "ToolTimeout"), ("ok", "")]


def test_a_failed_read_back_marks_the_result_unverified(stack: Stack) -> None:
    guard = ToolGuard(stack.gate)
    store: dict[str, int] = {}

    def write(ctx: Any, charge: str, amount: int, lost: bool) -> str:
        if not lost:
            store[charge] = amount
        return charge

    with stack.ledger.run("refunds") as run:
        for charge, lost in (("ch_ok", False), ("ch_lost", True), ("ch_ok2", False)):
            with guard.call(run, "stripe", "create_refund", mode="write",
                            args={"charge": charge, "amount": 7},
                            idempotency_key=f"{charge}:r") as ctx:
                ctx.invoke(write, ctx, charge, 7, lost, read_back=lambda c: c in store)
                assert ctx.verified is (not lost)
    stack.landed(run.run_id, len(run.event_ids))
    flags = stack.rows("SELECT JSONExtractRaw(body, 'verified') FROM events FINAL WHERE "
                       "run_id = {r:String} AND event_type = 'tool.result' ORDER BY seq",
                       r=run.run_id)
    assert flags == [("true",), ("false",), ("true",)]
    health = stack.call("GET", "/v1/tools/health", "reader",
                        params={"tool": "stripe", "since": "1h"})
    assert health.status_code == 200, health.text
    (stripe,) = health.json()["tools"]
    assert (stripe["verified_writes"], stripe["unverified_writes"]) == (2, 1), stripe
    assert stripe["verified_rate"] == pytest.approx(2 / 3, abs=1e-6)
    margins = stack.call("GET", "/v1/margins", "reader", params={"by": "tenant",
                                                                 "since": "1h"})
    assert margins.status_code == 200, margins.text
    by_tool = {r["tool"]: r for r in margins.json()["verified_writes"]}
    assert by_tool["stripe"]["verified_rate"] == pytest.approx(2 / 3, abs=1e-6)


def test_schema_invalid_arguments_are_refused_naming_the_field(stack: Stack) -> None:
    guard = ToolGuard(stack.gate)
    ran: list[str] = []
    with stack.ledger.run("refunds") as run:
        with pytest.raises(ToolDenied) as refused:
            guard.invoke(run, "stripe", "create_refund", lambda ctx: ran.append("refund"),
                         mode="write", args={"charge": "ch_1", "amount": "fifty",
                                             "card": "4242424242424242"},
                         idempotency_key="ch_1:bad")
        run.finish("failure", error=str(refused.value))
    assert ran == [], "the tool never ran"
    assert refused.value.rule == "schema"
    assert "'amount' must be of type integer" in refused.value.reason
    assert "'card' is not allowed" in refused.value.reason
    assert "4242" not in refused.value.reason and "fifty" not in refused.value.reason
    stack.landed(run.run_id, len(run.event_ids))
    decisions = stack.rows(
        "SELECT JSONExtractString(body, 'rule'), decision, JSONExtractString(body, 'reason') "
        "FROM events FINAL WHERE run_id = {r:String} AND event_type = 'policy.decision'",
        r=run.run_id)
    assert [(r, d) for r, d, _ in decisions] == [("schema", "deny")]
    assert "'amount'" in decisions[0][2]
    assert stack.rows("SELECT count() FROM events FINAL WHERE run_id = {r:String} AND "
                      "event_type = 'tool.call'", r=run.run_id) == [(0,)]

    # the HTTP gate, on the API's (packaged) catalog: amount must be a positive number
    body = {"run_id": "run-schema-1", "tool": "stripe", "action": "create_refund",
            "mode": "write", "idempotency_key": "ch_1:refund"}
    bad = stack.call("POST", "/v1/gate/check", "agent",
                     json={**body, "args": {"id": "ch_1", "amount": "lots"}})
    assert bad.status_code == 200, bad.text
    answer = bad.json()
    assert (answer["decision"], answer["rule"]) == ("deny", "schema"), answer
    assert "'amount'" in answer["reason"] and "lots" not in answer["reason"]
    good = stack.call("POST", "/v1/gate/check", "agent",
                      json={**body, "args": {"id": "ch_1", "amount": 50}}).json()
    assert good["decision"] == "allow", good
    assert good["controls"]["timeout_s"] == 30, good


def _budget_exceeded(stack: Stack, run_id: str) -> None:
    signal = ControlSignal(kind="budget", scope=run_scope("acme", AGENT, run_id),
                           state=EXCEEDED, version=1, ts=datetime.now(UTC),
                           reason="run cost 2.10 USD > max 2.00", fallback="ask_user_to_confirm")
    producer = Producer(client_config(stack.settings.kafka_bootstrap or "", "producer"))
    producer.produce(topics.CONTROL, signing.sign_json(stack.ledger_key, signing.CONTROL,
                                                       signal.to_json()),
                     signal.key.encode())
    assert producer.flush(15) == 0


def _pending_for_alice(stack: Stack, run_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        listed = stack.call("GET", "/v1/approvals", "alice",
                            params={"queue": "user:alice", "status": "pending"})
        assert listed.status_code == 200, listed.text
        mine = [a for a in listed.json()["approvals"] if a["run_id"] == run_id]
        return mine[0] if mine else None
    return wait_for(found, 60, what=f"alice's pending approval for run {run_id}")


def test_ask_user_to_confirm_pauses_for_the_end_user(stack: Stack) -> None:
    ring = signing.Keyring({})
    ring.add(stack.ledger_key.public)
    boot = stack.settings.kafka_bootstrap or ""
    control = ControlFollower(boot, trusted=ring).start()
    approvals = ApprovalFollower(boot, trusted=ring).start()
    try:
        safe = SafeModeGuard(control, "acme", AGENT, stale_after_s=3600)
        guard = safe.with_policy(stack.gate, approvals)
        run = stack.ledger.run("refunds", on_behalf_of="alice")
        with run:
            _budget_exceeded(stack, run.run_id)
            wait_for(lambda: not safe.decide("stripe", "read", run.run_id).allowed, 30,
                     what="the guard to see the signed budget signal")
            outcome: dict[str, Any] = {}

            def agent(label: str, charge: str) -> None:
                try:
                    with guard.call(run, "stripe", "get_charge", mode="read",
                                    args={"id": charge}, wait_s=60) as ctx:
                        outcome[label] = ctx.invoke(lambda: f"charge {charge}")
                except ToolDenied as exc:
                    outcome[label] = exc

            first = threading.Thread(target=agent, args=("yes", "ch_1"))
            first.start()
            asked = _pending_for_alice(stack, run.run_id)
            assert asked["queue"] == "user:alice" and asked["action"] == "stripe:get_charge"
            # the agent's own key may not answer for alice
            assert stack.call("POST", f"/v1/approvals/{asked['approval_id']}/approve",
                              "agent", json={"reason": "me"}).status_code == 403
            yes = stack.call("POST", f"/v1/approvals/{asked['approval_id']}/approve",
                             "alice", json={"reason": "fine, go over budget"})
            assert yes.status_code == 200, yes.text
            first.join(60)
            assert outcome["yes"] == "charge ch_1", outcome

            second = threading.Thread(target=agent, args=("no", "ch_2"))
            second.start()
            asked = _pending_for_alice(stack, run.run_id)
            no = stack.call("POST", f"/v1/approvals/{asked['approval_id']}/deny", "alice",
                            json={"reason": "stop spending"})
            assert no.status_code == 200, no.text
            second.join(60)
            refused = outcome["no"]
            assert isinstance(refused, ToolDenied) and refused.rule == "user_declined"
        assert run.outcome == "aborted"
    finally:
        control.close()
        approvals.close()
    stack.landed(run.run_id, len(run.event_ids))
    trail = stack.rows(
        "SELECT event_type, JSONExtractString(body, 'approver'), "
        "JSONExtractString(body, 'decision'), outcome "
        "FROM events FINAL WHERE run_id = {r:String} AND event_type IN ('approval.requested', "
        "'approval.resolved', 'tool.call', 'run.finished') ORDER BY seq", r=run.run_id)
    assert trail == [
        ("approval.requested", "user:alice", "", ""),
        ("approval.resolved", "alice", "approved", ""),
        ("tool.call", "", "", ""),
        ("approval.requested", "user:alice", "", ""),
        ("approval.resolved", "alice", "rejected", ""),
        ("run.finished", "", "", "aborted"),
    ], trail
