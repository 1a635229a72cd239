"""Issue 24, part 1: the control plane over HTTP (``POST /v1/gate/check`` and the
approval long-poll), against a real broker, the real sink and a real chdb store.

Every wait is on a condition with a deadline (what was seen last is in the failure);
no wall-clock time is asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentledger.core.settings import Settings
from agentledger.schemas.signals import OPEN
from tests.helpers import wait_for
from tests.shell.gate_stack import AGENT, GateStack, gate_stack

pytestmark = pytest.mark.integration

NODE_AGENT = Path(__file__).with_name("gate_agent.test.mjs")
REFUND = {"tool": "stripe", "action": "create_refund", "mode": "write",
          "idempotency_key": "ch_1:refund"}


@pytest.fixture
def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[GateStack]:
    yield from gate_stack(settings, monkeypatch)


def test_the_key_decides_which_agent_checks(stack: GateStack) -> None:
    read = {"run_id": "run-key-1", "tool": "stripe", "action": "get_charge", "mode": "read",
            "args": {"id": "ch_1"}}
    own = stack.check(**read, agent=AGENT)
    assert own.status_code == 200, own.text
    assert (own.json()["decision"], own.json()["agent"]) == ("allow", AGENT)
    for other in ("triage-bot", "globex/refund-agent", "acme/triage-bot"):
        claimed = stack.check(**read, agent=other)
        assert claimed.status_code == 403, claimed.text
        assert "cannot check as" in claimed.json()["detail"]
    unbound = stack.check("reader", **read)
    assert unbound.status_code == 403 and "no agent" in unbound.json()["detail"], unbound.text
    multi = stack.check("multi", **read)
    assert multi.status_code == 403 and "exactly one agent" in multi.json()["detail"], \
        multi.text
    bad = stack.check(**{**read, "mode": "delete"})
    assert bad.status_code == 422, bad.text


def test_an_open_breaker_makes_the_check_deny_a_write(stack: GateStack) -> None:
    body = {**REFUND, "run_id": "run-breaker-1", "args": {"id": "ch_1", "amount": 50}}
    before = stack.check(**body)
    assert before.status_code == 200, before.text
    assert before.json()["decision"] == "allow", before.json()
    stack.breaker("acme", "stripe", OPEN, 1)
    seen = wait_for(lambda: (r := stack.check(**body).json())["decision"] == "deny" and r,
                    30, what="the check to see the signed breaker")
    assert (seen["rule"], seen["policy_id"]) == ("breaker_open", "agentledger.control")
    # the catalog's mode wins: a refund declared "read" is still a write, still refused
    declared_read = stack.check(**{**body, "mode": "read"}).json()
    assert (declared_read["mode"], declared_read["decision"]) == ("write", "deny")


def test_a_denied_call_is_recorded_on_a_gate_run(stack: GateStack) -> None:
    run_id = "run-denied-1"
    denied = stack.check(run_id=run_id, tool="gmail", action="send_message", mode="write",
                         args={"to": "bob@example.com", "password": "hunter2"},
                         idempotency_key="mail-1")
    assert denied.status_code == 200, denied.text
    assert (denied.json()["decision"], denied.json()["rule"]) == ("deny", "gmail-never-send")
    sql = ("SELECT run_id, JSONExtractString(body, 'rule'), JSONExtractString(body, "
           "'decision') FROM events FINAL WHERE event_type = 'policy.decision' AND tenant = "
           "'acme' AND agent = {a:String} AND JSONExtractString(body, 'action') = "
           "'gmail:send_message'")
    rows = wait_for(lambda: stack.query(sql, a=AGENT), 60, what="the deny in the store")
    assert [r[1:] for r in rows] == [("gmail-never-send", "deny")]
    started = stack.query(
        "SELECT JSONExtractString(body, 'workflow'), JSONExtractString(body, 'input_ref') "
        "FROM events FINAL WHERE event_type = 'run.started' AND run_id = {r:String}",
        r=rows[0][0])
    assert started == [("http-gate", f"agent-run:{run_id}")]
    verified = stack.call("GET", f"/v1/verify/{rows[0][0]}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_a_node_agent_is_escalated_approved_and_proceeds(stack: GateStack) -> None:
    """The agent in another language: node's own test runner and plain fetch."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    env = {**os.environ, "GATE_API_URL": stack.api.url, "GATE_AGENT_KEY": stack.keys["agent"],
           "GATE_APPROVER_KEYS": f"{stack.keys['ana']},{stack.keys['ben']}"}
    done = subprocess.run([node, "--test", str(NODE_AGENT)], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# pass 1" in done.stdout and "# fail 0" in done.stdout, done.stdout
    rows = stack.query(
        "SELECT run_id, JSONExtractString(body, 'approval_id') FROM events FINAL WHERE "
        "event_type = 'approval.requested' AND tenant = 'acme' AND agent = {a:String}",
        a=AGENT)
    assert len(rows) == 1, rows
    resolved = wait_for(lambda: stack.query(
        "SELECT JSONExtractString(body, 'decision'), JSONExtractString(body, 'approval_id') "
        "FROM events FINAL WHERE event_type = 'approval.resolved' AND run_id = {r:String}",
        r=rows[0][0]), 60, what="the approval.resolved on the gate run")
    assert resolved == [("approved", rows[0][1])]

    def decisions() -> list[str]:
        return [d[0] for d in stack.query(
            "SELECT JSONExtractString(body, 'decision') FROM events FINAL WHERE run_id = "
            "{r:String} AND event_type = 'policy.decision' ORDER BY seq", r=rows[0][0])]

    # escalated; a bigger refund on the approval refused; the approved one allowed; the
    # used-up approval refused
    wanted = ["escalate", "deny", "allow", "deny"]
    wait_for(lambda: decisions() == wanted, 60,
             what="the gate run's decisions: escalate, deny, allow, deny")
    verified = stack.call("GET", f"/v1/verify/{rows[0][0]}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text
