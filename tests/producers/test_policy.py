"""Tool-gating policy (Cedar), unit level: the issue's examples as policy cases, broken
policy files refused with file, line and reason, the SDK's enforcement recorded on the run
(events captured in memory: no broker needed to check what would be sent), policy diffs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import POLICY_UNAVAILABLE, ToolDenied, ToolGuard, load_gate
from agentledger.producers.gate import DEFAULT_DIR, Gate, PolicyError
from agentledger.producers.simulator import Simulator
from agentledger.producers.tool_policy_cases import diff, load_cases, run_cases
from agentledger.schemas.events import parse_event
from agentledger.schemas.integrity import verify_chain
from tests.conftest import CLI


class Capture(Ledger):
    """A Ledger that keeps what it would send."""

    def __init__(self, identity: AgentIdentity):
        super().__init__({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, identity)
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        self.events.append(event)


def _ledger(agent: str, tenant: str = "acme") -> Capture:
    return Capture(AgentIdentity(tenant=tenant, agent=agent, agent_version="1",
                                 principal=f"svc-{agent}"))


def _copy_policy(tmp_path: Path) -> Path:
    target = tmp_path / "policy"
    shutil.copytree(DEFAULT_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate.load()


def test_the_issue_examples_hold_as_policy_cases(gate: Gate):
    results = {r.name: r for r in run_cases(gate, load_cases(DEFAULT_DIR / "cases.yaml"))}
    assert all(r.ok for r in results.values()), [r.as_dict() for r in results.values()
                                                  if not r.ok]
    expected = {
        "gmail read allowed": "allow", "gmail draft allowed": "allow",
        "gmail send denied": "deny", "jira issue create allowed": "allow",
        "jira settings change denied": "deny", "refund at the threshold allowed": "allow",
        "refund over the threshold needs two approvers": "escalate",
        "one approver is not enough": "escalate", "two approvers let it through": "allow",
        "transfer needs two approvers": "escalate",
        "another tenant's resource denied": "deny",
        "write without idempotency key denied": "deny",
    }
    assert {name: results[name].got.decision for name in expected} == expected
    refund = results["refund over the threshold needs two approvers"].got
    assert (refund.approvals_required, refund.approver_role) == (2, "finance")
    assert refund.queue is not None and refund.queue.on_expiry == "abort"
    assert refund.policy_version == gate.version and gate.version.startswith("2026.11.1+")


def test_remembered_decisions_answer_exactly_what_cedar_answers(
        monkeypatch: pytest.MonkeyPatch):
    """Gate._authorize remembers Cedar's answers by request: interleaved calls, a full
    memory and the second ask of an escalation answer as a gate that remembers
    nothing (a fresh gate per call) does."""
    from agentledger.producers import gate as gate_module

    monkeypatch.setattr(gate_module, "MAX_REMEMBERED_DECISIONS", 3)
    remembering = Gate.load()
    calls = [("stripe", "create_refund", {"amount": a}, n)
             for a in (50, 450, 50, 850, 200.5, 450, 199, 10**30) for n in (0, 2, 0)]
    calls += [("stripe", "get_charge", {"id": f"ch_{i}"}, 0) for i in range(4)]
    calls += [("gmail", "send_message", {"to": "x@example.com"}, 0)] * 2
    for tool, action, args, approvals in calls * 2:
        asked = {"tenant": "acme", "agent": "refund-agent", "tool": tool, "action": action,
                 "args": args, "idempotency_key": "k", "approvals": approvals}
        assert remembering.decide(**asked) == Gate.load().decide(**asked), asked


def test_policy_test_cli_passes_and_fails_a_wrong_expectation(tmp_path: Path):
    done = subprocess.run([*CLI, "policy", "test", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"failed": 0' in done.stdout
    wrong = tmp_path / "cases.yaml"
    wrong.write_text("cases:\n  - {name: send is fine, principal: acme/mail-assistant,\n"
                     "     action: 'gmail:send_message', expect: allow}\n")
    failed = subprocess.run([*CLI, "policy", "test", str(wrong), "--json"],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    (result,) = json.loads(failed.stdout)["results"]
    assert result["why"] == "expected allow, got deny (gmail-never-send)"


def test_a_broken_policy_file_is_refused_with_file_line_and_reason(tmp_path: Path):
    policy = _copy_policy(tmp_path)
    cedar = policy / "gate.cedar"
    _edit(cedar, "context.args.amount > 800", "context.args.amount >> 800")
    line = next(i for i, text in enumerate(cedar.read_text().splitlines(), 1) if ">>" in text)
    with pytest.raises(PolicyError) as caught:
        Gate.load(policy)
    assert (caught.value.file, caught.value.line) == (str(cedar), line)
    assert "unexpected token" in caught.value.reason
    done = subprocess.run([*CLI, "policy", "check", str(policy)], capture_output=True,
                          text=True)
    assert done.returncode == 1 and f"{cedar}:{line}: unexpected token" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_policy_naming_an_unknown_argument_fails_schema_validation(tmp_path: Path):
    policy = _copy_policy(tmp_path)
    _edit(policy / "gate.cedar", "context.args.amount > 200", "context.args.amout > 200")
    with pytest.raises(PolicyError, match=r"gate\.cedar:\d+: schema: .*args\.amout"):
        Gate.load(policy)
    _edit(policy / "gate.cedar", "context.args.amout > 200", "context.args.amount > 200")
    _edit(policy / "catalog.yaml", "on_expiry: abort", "on_expiry: shrug")
    with pytest.raises(PolicyError, match=r"catalog\.yaml:\d+: queue finance"):
        Gate.load(policy)


def test_a_denied_tool_is_refused_before_the_call_and_recorded(gate: Gate):
    ledger = _ledger("mail-assistant")
    guard = ToolGuard(gate)
    with ledger.run("inbox") as run:
        with guard.call(run, "gmail", "read_message", mode="read", args={"id": "m1"}) as call:
            call.result("ok")
        with pytest.raises(ToolDenied) as caught:
            guard.call(run, "gmail", "send_message", mode="write",
                       args={"to": "bob@example.com", "token": "secret"},
                       idempotency_key="k1")
        run.finish("aborted", error=str(caught.value))
    assert caught.value.rule == "gmail-never-send"
    types = [e["event_type"] for e in ledger.events]
    assert types == ["run.started", "tool.call", "tool.result", "policy.decision",
                     "run.finished"], "no tool.call for the denied send"
    deny = ledger.events[3]["body"]
    assert deny == {"policy_id": "tool-gate", "policy_version": gate.version,
                    "rule": "gmail-never-send", "decision": "deny",
                    "action": "gmail:send_message",
                    "reason": "no agent sends mail: a human sends the draft"}
    for event in ledger.events:
        parse_event(event)
    assert verify_chain(ledger.events).ok


def test_a_guard_without_a_loadable_policy_refuses_writes_and_says_why(tmp_path: Path):
    policy = _copy_policy(tmp_path)
    _edit(policy / "gate.cedar", "@id(\"jira-issues\")", "@id(\"jira-issues\"")
    loaded = load_gate(policy)
    assert isinstance(loaded, PolicyError)
    ledger = _ledger("triage-bot")
    guard = ToolGuard(loaded)
    with ledger.run("ticket_triage") as run:
        with guard.call(run, "zendesk", "get_ticket", mode="read", args={"id": 1}) as call:
            call.result("ok")
        with pytest.raises(ToolDenied) as caught:
            guard.call(run, "zendesk", "set_priority", mode="write", args={"id": 1},
                       idempotency_key="k")
    assert caught.value.rule == POLICY_UNAVAILABLE
    assert f"{policy / 'gate.cedar'}:" in caught.value.reason
    deny = [e["body"] for e in ledger.events if e["event_type"] == "policy.decision"]
    assert len(deny) == 1 and deny[0]["rule"] == POLICY_UNAVAILABLE
    assert "policy not loaded" in deny[0]["reason"]


def test_policy_diff_lists_the_calls_whose_decision_changes(tmp_path: Path, gate: Gate):
    policy = _copy_policy(tmp_path)
    _edit(policy / "gate.cedar", "context.args.amount > 200", "context.args.amount > 100")
    stricter = Gate.load(policy)
    assert stricter.version != gate.version
    calls = [{"principal": "acme/refund-agent", "action": "stripe:create_refund",
              "args": {"amount": amount}, "idempotency_key": True, "expect": "allow"}
             for amount in (50, 150, 250)]
    changed = diff(gate, stricter, calls)
    assert [(c["args"]["amount"], c["old"], c["new"]) for c in changed] == [
        (150, "allow", "escalate")]


def test_the_simulator_shows_allow_deny_and_two_approver_escalations():
    events: list[dict[str, Any]] = []

    class Keep(Ledger):
        def send(self, event: dict[str, Any], traceparent: str) -> None:
            events.append(event)

    sim = Simulator(lambda ident: Keep({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
                                       ident), seed=42)
    sim.run(300)
    decisions = {(e["body"]["decision"], e["body"]["rule"]) for e in events
                 if e["event_type"] == "policy.decision"}
    assert decisions == {("allow", "payments-refunds"), ("deny", "refund-hard-limit"),
                         ("escalate", "refund-over-threshold")}
    approved = [e["body"] for e in events if e["event_type"] == "approval.resolved"
                and e["body"]["decision"] == "approved"]
    assert approved and all(len(set(b["approvers"])) == 2 for b in approved)
    assert sim.denials["refund-hard-limit"] > 0


class Follower:
    """The approvals follower's interface over a plain dict (unit level)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def get(self, approval_id: str) -> Any:
        return self.state.get(approval_id)

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        return predicate()


def test_an_agent_resumes_a_pending_approval_later_by_its_id(gate: Gate):
    from datetime import UTC, datetime

    from agentledger.producers.enforce import ApprovalPending
    from agentledger.schemas.approvals import ApprovalState, Vote

    follower = Follower()
    ledger = _ledger("refund-agent")
    guard = ToolGuard(gate, approvals=follower)  # type: ignore[arg-type]
    with ledger.run("refund_with_approval") as run:
        with pytest.raises(ApprovalPending) as pending:
            guard.call(run, "stripe", "create_refund", mode="write",
                       args={"id": "ch_9", "amount": 300}, idempotency_key="ch_9")
        approval_id = pending.value.approval_id
        with pytest.raises(ApprovalPending):
            guard.resume(run, approval_id)  # still nobody decided
        now = datetime.now(UTC)
        follower.state[approval_id] = ApprovalState(
            approval_id=approval_id, tenant="acme", agent="refund-agent", run_id=run.run_id,
            approver_role="finance", approvals_required=2, status="approved", version=2,
            votes=[Vote(approver="ana", decision="approve"),
                   Vote(approver="ben", decision="approve")],
            requested_at=now, resolved_at=now)
        with guard.resume(run, approval_id) as call:
            call.result("ok")
    types = [e["event_type"] for e in ledger.events]
    assert types == ["run.started", "policy.decision", "approval.requested",
                     "approval.resolved", "tool.call", "tool.result", "run.finished"]
    requested, resolved = ledger.events[2]["body"], ledger.events[3]["body"]
    assert requested["approval_id"] == resolved["approval_id"] == approval_id
    assert (requested["approvals_required"], requested["approver"]) == (2, "finance")
    assert resolved["approvers"] == ["ana", "ben"] and resolved["decision"] == "approved"
    assert ledger.events[-1]["body"]["outcome"] == "success"
    assert verify_chain(ledger.events).ok
