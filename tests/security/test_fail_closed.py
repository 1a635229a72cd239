"""Finding 8: the SDK failed open for a mislabelled write. With the tool policy failing to
load, a caller that said ``mode="read"`` on ``stripe:create_refund`` ran a refund of
100,000: the catalog's mode overrode the caller's only when the policy loaded.

Now the catalog's mode always wins (the failed directory's catalog if it alone loads,
else the packaged one; an action no catalog knows is a write), and without a loaded policy
every write is refused. The run's events are captured in memory (what would be sent) and
checked against the schema and the hash chain."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import POLICY_UNAVAILABLE, ToolDenied, ToolGuard, load_gate
from agentledger.producers.gate import DEFAULT_DIR, Gate, PolicyError
from agentledger.schemas.events import parse_event
from agentledger.schemas.integrity import verify_chain


class Capture(Ledger):
    def __init__(self, identity: AgentIdentity):
        super().__init__({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, identity)
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        self.events.append(event)


def _ledger() -> Capture:
    return Capture(AgentIdentity(tenant="acme", agent="refund-agent", agent_version="1",
                                 principal="svc-refund"))


def _broken(tmp_path: Path, *, catalog_too: bool = False) -> Path:
    root = tmp_path / "policy"
    shutil.copytree(DEFAULT_DIR, root)
    (root / "gate.cedar").write_text((root / "gate.cedar").read_text() + "\npermit (oops")
    if catalog_too:
        (root / "catalog.yaml").write_text("tools: [unclosed")
    return root


def _attempt(guard: ToolGuard, ledger: Capture, tool: str, action: str,
             mode: str) -> tuple[list[str], ToolDenied | None]:
    """Call the tool as the attacker would; the list holds what the tool did."""
    ran: list[str] = []
    denied = None
    with ledger.run("refund_with_approval") as run:
        try:
            with guard.call(run, tool, action, mode=mode, args={"amount": 100_000},
                            idempotency_key="k-1") as call:
                ran.append(f"{tool}:{action} amount=100000")
                call.result("ok")
        except ToolDenied as exc:
            denied = exc
    return ran, denied


@pytest.mark.parametrize("catalog_too", [False, True],
                         ids=["cedar-broken", "catalog-broken-too"])
def test_without_a_policy_a_write_called_read_is_refused_and_never_runs(
        tmp_path: Path, catalog_too: bool):
    loaded = load_gate(_broken(tmp_path, catalog_too=catalog_too))
    assert isinstance(loaded, PolicyError)
    ledger = _ledger()
    ran, denied = _attempt(ToolGuard(loaded), ledger, "stripe", "create_refund", "read")
    assert ran == [], "the refund ran"
    assert denied is not None and denied.rule == POLICY_UNAVAILABLE
    assert "policy not loaded" in denied.reason and "writes are refused" in denied.reason
    types = [e["event_type"] for e in ledger.events]
    assert "tool.call" not in types and "policy.decision" in types
    for event in ledger.events:
        parse_event(event)
    assert verify_chain(ledger.events).ok


def test_without_a_policy_an_action_no_catalog_knows_is_a_write(tmp_path: Path):
    loaded = load_gate(tmp_path / "no-such-policy")
    assert isinstance(loaded, PolicyError)
    ran, denied = _attempt(ToolGuard(loaded), _ledger(), "payments", "wire_money", "read")
    assert ran == [] and denied is not None and denied.rule == POLICY_UNAVAILABLE
    # a read the packaged catalog knows still goes on (reads may proceed)
    ran, denied = _attempt(ToolGuard(loaded), _ledger(), "stripe", "get_charge", "read")
    assert denied is None and ran == ["stripe:get_charge amount=100000"]


def test_with_a_policy_a_mislabelled_write_is_still_a_write():
    gate = Gate.load()
    ledger = _ledger()
    guard = ToolGuard(gate)
    assert guard.mode_of("stripe", "create_refund", "read") == "write"
    ran, _ = _attempt(guard, ledger, "stripe", "create_refund", "read")
    # 100,000 is far above what the policy lets through without approvers: it escalates or
    # is denied as the write it is; it never runs as a "read"
    assert ran == []
    decisions = [e["body"] for e in ledger.events if e["event_type"] == "policy.decision"]
    assert decisions and decisions[0]["action"] == "stripe:create_refund"
    assert decisions[0]["decision"] in ("deny", "escalate")
    calls = [e["body"] for e in ledger.events if e["event_type"] == "tool.call"]
    assert all(c["mode"] == "write" for c in calls)
