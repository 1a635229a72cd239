"""Tool gating end to end: a real Tansu broker, the real sink into a real chdb store, the
ledger API in process and the CLI as approvers run it.

- an agent calling a denied tool is refused before the call; the run's ledger shows the
  deny with policy version and rule, and the stored chain verifies;
- an approval flow through the CLI: requested, approved by two different keys (the same key
  twice and the agent's own key refused), the agent resumes, latency recorded, metrics;
- an expired request ends the run as its queue's policy says (aborted).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.core import discovery
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import ApprovalExpired, ToolDenied, ToolGuard
from agentledger.producers.gate import DEFAULT_DIR, Gate
from agentledger.services import start_api
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, settings: Settings, sink: SinkThread, keys: dict[str, str],
                 env: dict[str, str]):
        self.settings = settings
        self.sink = sink
        self.keys = keys
        self.env = env

    def cli(self, *args: str, key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env={**self.env, "AGENTLEDGER_API_KEY":
                                                  self.keys[key]},
                              capture_output=True, text=True, timeout=120)

    def cli_json(self, *args: str, key: str) -> Any:
        done = self.cli(*args, "--json", key=key)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def rows(self, sql: str, **params: object) -> list[tuple]:
        return self.sink.query(sql, **params)


@pytest.fixture
def stack(settings: Settings, service_env: dict[str, str],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("AGENTLEDGER_KAFKA_BOOTSTRAP", settings.kafka_bootstrap or "")
    monkeypatch.setenv("AGENTLEDGER_DATA_DIR", str(settings.data_dir))
    keys = {name: new_key() for name in ("ana", "ben", "bot", "reader")}
    ring = KeyRing([
        entry_for("ana@finance", keys["ana"], ["acme"], roles=["finance"]),
        entry_for("ben@finance", keys["ben"], ["acme"], roles=["finance"]),
        entry_for("refund-agent-ops", keys["bot"], ["acme"], roles=["finance"],
                  agents=["acme/refund-agent"]),
        entry_for("globex-reader", keys["reader"], ["globex"], roles=["finance"]),
    ])
    with SinkThread(settings) as sink:
        api = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1", port=0)
        discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
        try:
            yield Stack(settings, sink, keys, service_env)
        finally:
            discovery.withdraw(settings, discovery.STORE_FILE)
            desk = getattr(api.server.config.app.state, "approvals", None)
            if desk is not None:
                desk.close()
            api.stop()


def _ledger(bootstrap: str, agent: str) -> Ledger:
    return Ledger.connect(bootstrap, AgentIdentity(tenant="acme", agent=agent,
                                                   agent_version="1", principal=f"svc-{agent}"))


def _landed(stack: Stack, run_id: str, n: int) -> None:
    wait_for(lambda: stack.rows("SELECT count() FROM events FINAL WHERE run_id = {r:String}",
                                r=run_id)[0][0] >= n, 60, what=f"{n} events of {run_id}")


def test_a_denied_tool_is_refused_and_the_ledger_shows_why(stack: Stack, broker: str,
                                                          tmp_path: Path):
    gate = Gate.load()
    ledger = _ledger(broker, "mail-assistant")
    guard = ToolGuard(gate)
    with ledger.run("inbox_assistant") as run:
        with guard.call(run, "gmail", "create_draft", mode="write", args={"to": "bob"},
                        idempotency_key="d1") as call:
            call.result("ok")
        with pytest.raises(ToolDenied) as refused:
            guard.call(run, "gmail", "send_message", mode="write", args={"to": "bob"},
                       idempotency_key="s1")
        run.finish("aborted", error=str(refused.value))
    ledger.flush(10)
    _landed(stack, run.run_id, len(run.event_ids))
    calls = stack.rows("SELECT action FROM events FINAL WHERE run_id = {r:String} AND "
                       "event_type = 'tool.call'", r=run.run_id)
    assert calls == [("create_draft",)], "the denied send never reached the tool"
    timeline = stack.cli_json("trace", run.run_id, key="ana")
    shown = json.dumps(timeline)
    assert gate.version in shown and "gmail-never-send" in shown
    (deny,) = stack.rows(
        "SELECT JSONExtractString(body, 'policy_version'), JSONExtractString(body, 'rule'), "
        "decision FROM events FINAL WHERE run_id = {r:String} AND "
        "event_type = 'policy.decision'", r=run.run_id)
    assert deny == (gate.version, "gmail-never-send", "deny")
    verified = stack.cli_json("verify", run.run_id, key="ana")
    assert verified["ok"] is True and verified["runs"][0]["events"] == len(run.event_ids)

    # policy diff replays the recorded calls: a policy without drafts would block this one
    stricter = tmp_path / "no-drafts"
    shutil.copytree(DEFAULT_DIR, stricter)
    cedar = stricter / "gate.cedar"
    cedar.write_text(cedar.read_text().replace(
        'action in [Action::"gmail:read_message", Action::"gmail:create_draft"]',
        'action in [Action::"gmail:read_message"]'))
    diffed = stack.cli_json("policy", "diff", str(DEFAULT_DIR), str(stricter), "--since",
                            "1h", key="ana")
    assert diffed["replayed"] >= 1
    assert [(c["action"], c["old"], c["new"], c["new_rule"]) for c in diffed["changed"]] == [
        ("gmail:create_draft", "allow", "deny", "default-deny")]


def _pending(stack: Stack, run_id: str) -> dict[str, Any] | None:
    found = stack.cli_json("approvals", "list", key="ana")
    mine = [a for a in found if a["run_id"] == run_id]
    return mine[0] if mine else None


class Agent(threading.Thread):
    """The agent side: one refund that needs approval, waiting on the approvals topic."""

    def __init__(self, ledger: Ledger, guard: ToolGuard, amount: int, wait_s: float):
        super().__init__(daemon=True)
        self.ledger, self.guard, self.amount, self.wait_s = ledger, guard, amount, wait_s
        self.run_id: str | None = None
        self.outcome: str | None = None
        self.error: BaseException | None = None
        self.started_run = threading.Event()

    def run(self) -> None:
        try:
            with self.ledger.run("refund_with_approval") as run:
                self.run_id = run.run_id
                self.started_run.set()
                with self.guard.call(run, "stripe", "create_refund", mode="write",
                                     args={"id": "ch_1", "amount": self.amount},
                                     idempotency_key="ch_1:refund",
                                     wait_s=self.wait_s) as call:
                    call.result("ok", side_effect={"resource": "ch_1", "op": "refund"})
            self.outcome = run.outcome
        except ApprovalExpired as exc:
            self.outcome = exc.outcome
        except BaseException as exc:
            self.error = exc
        finally:
            self.started_run.set()
            self.ledger.flush(10)


def test_approval_flow_with_dual_control_through_the_cli(stack: Stack, broker: str):
    with ApprovalFollower(broker) as follower:
        agent = Agent(_ledger(broker, "refund-agent"), ToolGuard(Gate.load(),
                                                                  approvals=follower), 450, 90)
        agent.start()
        agent.started_run.wait(30)
        run_id = agent.run_id
        request = wait_for(lambda: _pending(stack, run_id), 60, interval_s=0.3,
                           what="the approval request in the queue")
        approval_id = request["approval_id"]
        assert (request["queue"], request["approvals_required"], request["status"]) == (
            "finance", 2, "pending")
        assert request["args"] == {"id": "ch_1", "amount": 450}

        own = stack.cli("approvals", "approve", approval_id, "--reason", "mine", key="bot")
        assert own.returncode == 1 and "own agent" in own.stderr
        other = stack.cli("approvals", "approve", approval_id, "--reason", "x", key="reader")
        assert other.returncode == 1 and "Traceback" not in other.stderr
        first = stack.cli_json("approvals", "approve", approval_id, "--reason", "ok", key="ana")
        assert (first["status"], first["approved_by"]) == ("pending", ["ana@finance"])
        twice = stack.cli("approvals", "approve", approval_id, "--reason", "again", key="ana")
        assert twice.returncode == 1 and "different approver" in twice.stderr
        second = stack.cli_json("approvals", "approve", approval_id, "--reason", "fine",
                                key="ben")
        assert second["status"] == "approved"
        assert second["approved_by"] == ["ana@finance", "ben@finance"]
        agent.join(60)
    assert agent.error is None and agent.outcome == "success", agent.error
    _landed(stack, run_id, 7)
    types = [t for (t,) in stack.rows("SELECT event_type FROM events FINAL WHERE run_id = "
                                      "{r:String} ORDER BY seq", r=run_id)]
    assert types == ["run.started", "policy.decision", "approval.requested",
                     "approval.resolved", "tool.call", "tool.result", "run.finished"]
    (resolved,) = stack.rows(
        "SELECT decision, latency_ms, JSONExtract(body, 'approvers', 'Array(String)') FROM "
        "events FINAL WHERE run_id = {r:String} AND event_type = 'approval.resolved'",
        r=run_id)
    assert resolved[0] == "approved" and resolved[1] > 0
    assert resolved[2] == ["ana@finance", "ben@finance"]
    late = stack.cli("approvals", "deny", approval_id, "--reason", "too late", key="ana")
    assert late.returncode == 1 and "approved already" in late.stderr
    stats = stack.cli_json("approvals", "stats", "--by", "tool", key="ana")
    (stripe,) = [g for g in stats["groups"] if g["key"] == "stripe"]
    assert (stripe["escalations"], stripe["approved"], stripe["override_rate"]) == (1, 1, 1.0)
    assert stripe["approval_p50_ms"] == pytest.approx(resolved[1], rel=0.01)
    assert stripe["sla_breaches"] == 0


def test_an_expired_request_ends_the_run_as_the_policy_says(stack: Stack, broker: str,
                                                            tmp_path: Path):
    policy = tmp_path / "policy"
    shutil.copytree(DEFAULT_DIR, policy)
    catalog = policy / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("expires_in_s: 3600", "expires_in_s: 2"))
    with ApprovalFollower(broker) as follower:
        agent = Agent(_ledger(broker, "refund-agent"),
                      ToolGuard(Gate.load(policy), approvals=follower), 300, 30)
        agent.start()
        agent.join(60)
    assert agent.error is None and agent.outcome == "aborted", agent.error
    run_id = agent.run_id
    _landed(stack, run_id, 5)
    rows = dict(stack.rows("SELECT event_type, if(event_type = 'run.finished', outcome, "
                           "decision) FROM events FINAL WHERE run_id = {r:String}",
                           r=run_id))
    assert rows["approval.resolved"] == "expired" and rows["run.finished"] == "aborted"
    assert "tool.call" not in rows
    expired = stack.cli_json("approvals", "list", "--status", "expired", key="ana")
    (mine,) = [a for a in expired if a["run_id"] == run_id]
    assert mine["sla_breached"] is True
    refused = stack.cli("approvals", "approve", mine["approval_id"], "--reason", "late",
                        key="ana")
    assert refused.returncode == 1 and "expired" in refused.stderr
