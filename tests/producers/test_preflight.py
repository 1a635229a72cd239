"""``ToolGuard.preflight``: the SDK's decision without a run, as ``POST /v1/gate/check``
uses it (the HTTP route's tests are in tests/shell/test_tool_gate.py). Pure: no
broker, no store."""

from __future__ import annotations

from pathlib import Path

from agentledger.producers.enforce import POLICY_UNAVAILABLE, ToolGuard, decide_call, load_gate
from agentledger.producers.gate import Gate
from agentledger.producers.guard import ALLOW, GUARD_POLICY_ID, Verdict

REFUND = {"tool": "stripe", "action": "create_refund", "idempotency_key": "ch_1:refund"}


def test_preflight_gives_the_policy_answer_with_the_catalog_mode() -> None:
    guard = ToolGuard(Gate.load())
    mode, small = guard.preflight(tenant="acme", agent="refund-agent", mode="read",
                                  args={"amount": 50}, control=ALLOW, **REFUND)
    assert (mode, small.decision) == ("write", "allow"), "the catalog's mode wins"
    _, big = guard.preflight(tenant="acme", agent="refund-agent", mode="write",
                             args={"amount": 700}, **REFUND)
    assert (big.decision, big.approvals_required, big.approver_role) == \
        ("escalate", 2, "finance")
    direct = decide_call(guard.gate, tenant="acme", agent="refund-agent",
                         args={"amount": 700}, **REFUND)
    assert direct == big, "the route and the SDK decide with the same code"


def test_a_control_refusal_wins_over_an_allowing_policy() -> None:
    guard = ToolGuard(Gate.load())
    refused = Verdict(False, "breaker_open", "stripe is failing", policy_version="7")
    _, decision = guard.preflight(tenant="acme", agent="refund-agent", mode="write",
                                  args={"amount": 50}, control=refused, **REFUND)
    assert (decision.decision, decision.rule, decision.policy_id, decision.policy_version) \
        == ("deny", "breaker_open", GUARD_POLICY_ID, "7")


def test_without_a_policy_reads_go_on_and_writes_are_refused(tmp_path: Path) -> None:
    guard = ToolGuard(load_gate(tmp_path / "missing"))
    _, read = guard.preflight(tenant="acme", agent="refund-agent", tool="stripe",
                              action="get_charge", mode="read", args={})
    _, write = guard.preflight(tenant="acme", agent="refund-agent", mode="write",
                               args={"amount": 50}, **REFUND)
    assert (read.decision, read.rule) == ("allow", POLICY_UNAVAILABLE)
    assert (write.decision, write.rule) == ("deny", POLICY_UNAVAILABLE)
