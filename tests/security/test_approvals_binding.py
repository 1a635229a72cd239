"""Issue 21, findings 4 and 5 (approvals half): an approval decides only the request it
was asked for, and only the ledger can say it was decided.

A real Tansu broker, the real sink into a real chdb store, the ledger API in process and
the real SDK (``ToolGuard`` + ``ApprovalFollower``) of an acme ``refund-agent`` asking for
a refund. Each test does the attack the way the issue describes — a second
``approval.requested`` with the same id in another tenant or under another agent's name,
an approval state produced straight to ``agent.approvals`` — and asserts it fails: the
vote is refused, nobody sees another tenant's votes, and the refund does not run.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.core import signing
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import ApprovalPending, ToolGuard
from agentledger.producers.gate import Gate
from agentledger.schemas.approvals import APPROVALS_TOPIC, ApprovalState, Vote
from agentledger.services import ApiServer, start_api
from tests.helpers import wait_for
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration

REFUND = {"id": "ch_1", "amount": 700}


@dataclass
class Stack:
    settings: Settings
    sink: SinkThread
    api: ApiServer
    keys: dict[str, str]
    ledger_key: signing.LedgerKey

    def call(self, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.api.url}{path}", timeout=60,
                             headers={"Authorization": f"Bearer {self.keys[key]}"}, **kw)

    def vote(self, approval_id: str, key: str, decision: str = "approve") -> httpx.Response:
        return self.call("POST", f"/v1/approvals/{approval_id}/{decision}", key,
                         json={"reason": f"{key} says so"})

    def requests_of(self, approval_id: str) -> int:
        return int(self.sink.query(
            "SELECT count() FROM events FINAL WHERE event_type = 'approval.requested' AND "
            "JSONExtractString(body, 'approval_id') = {a:String}", a=approval_id)[0][0])


@pytest.fixture
def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("AGENTLEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("AGENTLEDGER_DATA_DIR", str(settings.data_dir))
    key = signing.ledger_key(settings)  # the one the API's desk loads from the data dir
    keys = {name: new_key() for name in ("ana", "ben", "bot", "gx")}
    ring = KeyRing([
        entry_for("ana@finance", keys["ana"], ["acme"], roles=["finance"]),
        entry_for("ben@finance", keys["ben"], ["acme"], roles=["finance"]),
        entry_for("refund-agent-ops", keys["bot"], ["acme"], roles=["finance"],
                  agents=["refund-agent"]),
        entry_for("globex-approver", keys["gx"], ["globex"], roles=["finance"]),
    ])
    with SinkThread(settings) as sink:
        api = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1", port=0)
        try:
            yield Stack(settings, sink, api, keys, key)
        finally:
            desk = getattr(api.server.config.app.state, "approvals", None)
            if desk is not None:
                desk.close()
            api.stop()


def _ledger(bootstrap: str, tenant: str, agent: str) -> Ledger:
    return Ledger.connect(bootstrap, AgentIdentity(tenant=tenant, agent=agent,
                                                   agent_version="1", principal=f"svc-{agent}"))


def _forge_request(bootstrap: str, tenant: str, agent: str, approval_id: str) -> None:
    """A second ``approval.requested`` with the id of someone else's request."""
    ledger = _ledger(bootstrap, tenant, agent)
    with ledger.run("forgery") as run:
        run.emit("approval.requested", {
            "approver": "finance", "action": "stripe:create_refund", "reason": None,
            "approval_id": approval_id, "approvals_required": 1, "sla_s": 900,
            "expires_in_s": 3600, "args": REFUND})
    ledger.flush(10)


def _ask(guard: ToolGuard, run: Any) -> str:
    with pytest.raises(ApprovalPending) as pending:
        guard.call(run, "stripe", "create_refund", mode="write", args=REFUND,
                   idempotency_key="ch_1:refund", wait_s=0)
    return pending.value.approval_id


def _still_pending(guard: ToolGuard, run: Any, approval_id: str) -> None:
    with pytest.raises(ApprovalPending):
        guard.resume(run, approval_id, wait_s=0)


def test_a_second_request_with_the_same_id_cannot_be_voted_on(stack: Stack, broker: str):
    """Cross-tenant second row, then the agent's own key via another agent's name."""
    with ApprovalFollower(broker, trusted=stack.ledger_key.keyring()) as follower:
        guard = ToolGuard(Gate.load(), approvals=follower)
        ledger = _ledger(broker, "acme", "refund-agent")
        with ledger.run("refund_with_approval") as run:
            approval_id = _ask(guard, run)
            ledger.flush(10)
            wait_for(lambda: stack.requests_of(approval_id) == 1, 60, what="the request")
            first = stack.vote(approval_id, "ana")
            assert first.status_code == 200, first.text
            assert first.json()["approved_by"] == ["ana@finance"]

            # globex adds a request with acme's id, and globex's approver votes on it
            _forge_request(broker, "globex", "globex-bot", approval_id)
            wait_for(lambda: stack.requests_of(approval_id) == 2, 60,
                     what="the forged globex request landed")
            voted = stack.vote(approval_id, "gx")
            assert voted.status_code == 404, voted.text  # acme's request is not globex's
            listed = stack.call("GET", "/v1/approvals", "gx").json()["approvals"]
            assert [a for a in listed if a["approval_id"] == approval_id] == []
            assert "ana@finance" not in orjson.dumps(listed).decode(), \
                "globex sees none of acme's votes"
            stats = stack.call("GET", "/v1/approvals/stats", "gx").json()
            assert stats["refused_requests"] == 1

            # a key acting for refund-agent tries via a request under another agent's name
            _forge_request(broker, "acme", "other-agent", approval_id)
            wait_for(lambda: stack.requests_of(approval_id) == 3, 60,
                     what="the forged other-agent request landed")
            own = stack.vote(approval_id, "bot")
            assert own.status_code == 403 and "own agent" in own.text, own.text
            assert stack.call("GET", "/v1/approvals/stats", "ana").json()[
                "refused_requests"] == 1  # acme's forged copy; globex's is not acme's to see

            _still_pending(guard, run, approval_id)  # one real approval of two: no refund
            shown = stack.call("GET", f"/v1/approvals/{approval_id}", "ana").json()
            assert (shown["tenant"], shown["agent"], shown["run_id"]) == (
                "acme", "refund-agent", run.run_id)
            assert shown["approved_by"] == ["ana@finance"]

            # the real second approver: the agent goes ahead, binding and signature hold
            second = stack.vote(approval_id, "ben")
            assert second.status_code == 200 and second.json()["status"] == "approved"
            with guard.resume(run, approval_id, wait_s=30) as call:
                call.result("ok", side_effect={"resource": "ch_1", "op": "refund"})
        assert follower.refused == {"unsigned": 0, "forged": 0, "tombstone": 0, "future": 0}
        assert follower.verifier.counts["verified"] == 2


def _forged_state(approval_id: str, run_id: str, version: int, **kw: Any) -> ApprovalState:
    now = datetime.now(UTC)
    fields: dict[str, Any] = dict(
        approval_id=approval_id, tenant="acme", agent="refund-agent", run_id=run_id,
        action="stripe:create_refund", approver_role="finance", approvals_required=2,
        status="approved", version=version, requested_at=now, resolved_at=now,
        votes=[Vote(approver="ghost-1", decision="approve", reason="."),
               Vote(approver="ghost-2", decision="approve", reason=".")])
    return ApprovalState(**(fields | kw))


def _produce(bootstrap: str, approval_id: str, value: bytes) -> None:
    producer = Producer(client_config(bootstrap, "producer"))
    producer.produce(APPROVALS_TOPIC, value, approval_id.encode())
    assert producer.flush(15) == 0


def test_a_forged_approval_state_does_not_run_the_refund(stack: Stack, broker: str):
    with ApprovalFollower(broker, trusted=stack.ledger_key.keyring()) as follower:
        guard = ToolGuard(Gate.load(), approvals=follower)
        ledger = _ledger(broker, "acme", "refund-agent")
        with ledger.run("refund_with_approval") as run:
            approval_id = _ask(guard, run)
            ledger.flush(10)

            # straight to agent.approvals: unsigned, then with a signature of its own making
            _produce(broker, approval_id, _forged_state(approval_id, run.run_id, 99).to_json())
            fake = orjson.loads(_forged_state(approval_id, run.run_id, 100).to_json())
            fake["signature"] = {"alg": "ed25519", "key_id": stack.ledger_key.key_id,
                                 "sig": base64.urlsafe_b64encode(bytes(64)).decode()}
            _produce(broker, approval_id, orjson.dumps(fake))
            wait_for(lambda: follower.refused["unsigned"] == 1
                     and follower.refused["forged"] == 1, 30,
                     what=f"both forged states refused (refused: {follower.refused})")
            assert follower.get(approval_id) is None
            _still_pending(guard, run, approval_id)

            # the API's desk ignored them too: a real vote starts from nothing
            wait_for(lambda: stack.requests_of(approval_id) == 1, 60, what="the request")
            vote = stack.vote(approval_id, "ana")
            assert vote.status_code == 200, vote.text
            assert (vote.json()["status"], vote.json()["approved_by"]) == (
                "pending", ["ana@finance"])
            stats = stack.call("GET", "/v1/approvals/stats", "ana").json()
            assert stats["refused_states"] is None  # topic-wide counts: operators only

            # a state signed by the ledger but for another run (the binding, not the
            # signature, refuses it), and one decided after the request expired
            other_run = _forged_state(approval_id, "another-run", 200)
            _produce(broker, approval_id, signing.sign_json(stack.ledger_key, signing.APPROVAL,
                                                            other_run.to_json()))
            wait_for(lambda: (s := follower.get(approval_id)) is not None and s.version == 200,
                     30, what="the signed state for another run")
            _still_pending(guard, run, approval_id)
            mine = dict(tenant="acme", agent="refund-agent", run_id=run.run_id,
                        expires_at=datetime.now(UTC) + timedelta(hours=1))
            assert follower.decision(approval_id, **mine) is None
            assert follower.mismatched == 1

            late = _forged_state(approval_id, run.run_id, 201,
                                 resolved_at=datetime.now(UTC) + timedelta(hours=2))
            _produce(broker, approval_id, signing.sign_json(stack.ledger_key, signing.APPROVAL,
                                                            late.to_json()))
            wait_for(lambda: (s := follower.get(approval_id)) is not None and s.version == 201,
                     30, what="the signed state decided after expiry")
            _still_pending(guard, run, approval_id)
            assert follower.decision(approval_id, **mine) is None
            assert follower.mismatched == 2
            run.finish("aborted", error="test over")
    tool_calls = stack.sink.query(
        "SELECT count() FROM events FINAL WHERE run_id = {r:String} AND "
        "event_type = 'tool.call'", r=run.run_id)[0][0]
    assert tool_calls == 0, "the refund never ran"


def test_a_decision_binds_tenant_agent_run_and_expiry() -> None:
    now = datetime.now(UTC)
    state = _forged_state("a1", "r1", 1, resolved_at=now)
    mine = dict(approval_id="a1", tenant="acme", agent="refund-agent", run_id="r1")
    assert state.decides(**mine, expires_at=now + timedelta(seconds=1))
    assert not state.decides(**mine, expires_at=now - timedelta(seconds=1))
    for field, other in (("tenant", "globex"), ("agent", "other"), ("run_id", "r2"),
                         ("approval_id", "a2")):
        assert not state.decides(**(mine | {field: other}), expires_at=None), field
    assert not state.model_copy(update={"status": "pending"}).decides(**mine, expires_at=None)
