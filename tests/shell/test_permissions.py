"""The permissions matrix is the policy's own answer: it agrees with every case of the
policy's cases file, its bands come from the policy's literals, and a changed policy
shows its diff from the version recorded before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentledger.auth import KeyRing, entry_for
from agentledger.producers.gate import Gate
from agentledger.producers.tool_policy_cases import decide_case, load_cases
from agentledger.producers.tool_policy_files import DEFAULT_DIR
from agentledger.queries import permissions, policy_versions
from agentledger.queries.common import ALL, Forbidden, Scope


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate.load(None)


def test_matrix_agrees_with_every_policy_case(gate: Gate) -> None:
    cases = load_cases(DEFAULT_DIR / "cases.yaml")
    by_tenant: dict[str, dict] = {}
    for case in cases:
        tenant = case["principal"].split("/", 1)[0]
        found = by_tenant.setdefault(tenant, permissions.matrix(gate, tenant))
        got = permissions.decide(found, gate, case)
        real = decide_case(gate, case)
        assert (got["decision"], got["rule"]) == (real.decision, real.rule), case["name"]
        assert got["decision"] == case["expect"], case["name"]
        if case.get("rule"):
            assert got["rule"] == case["rule"], case["name"]
        if case.get("approvals_required"):
            assert got["approvals_required"] == case["approvals_required"], case["name"]


def test_refund_bands_come_from_the_policy_literals(gate: Gate) -> None:
    found = permissions.matrix(gate, "acme")
    agent = next(a for a in found["agents"] if a["agent"] == "refund-agent")
    refund = next(c for c in agent["cells"] if c["action"] == "create_refund")
    assert refund["decision"] == "conditional"
    assert [b["when"] for b in refund["bands"]] == [
        "no amount", "amount ≤ 200", "201 ≤ amount ≤ 800", "amount ≥ 801"]
    over = refund["bands"][2]
    assert over["outcome"] == {"decision": "escalate", "rule": "refund-over-threshold",
                               "reason": over["outcome"]["reason"],
                               "approvals_required": 2, "approver_role": "finance"}
    assert over["after_approvals"]["decision"] == "allow"
    assert "201 ≤ amount ≤ 800: 2 \u00d7 finance (refund-over-threshold)" in refund["summary"]
    assert any("writes-need-idempotency-key" in n for n in refund["notes"])


def test_role_holders_are_the_keys_of_the_tenant_never_their_digests(gate: Gate) -> None:
    entries = [entry_for("alice", "al_a", ["acme"], roles=["finance"]),
               entry_for("bob", "al_b", ["globex"], roles=["finance"]),
               entry_for("ops", "al_o", ["*"], roles=["support-lead"])]
    principals = KeyRing(entries).principals()
    roles = {r["role"]: r for r in permissions.role_holders(gate, principals, "acme")}
    assert [h["name"] for h in roles["finance"]["holders"]] == ["alice"]
    assert [h["name"] for h in roles["support-lead"]["holders"]] == ["ops"]
    assert "sha256" not in json.dumps(roles) and entries[0].sha256 not in json.dumps(roles)


def test_another_tenant_is_refused(gate: Gate) -> None:
    with pytest.raises(Forbidden):
        permissions.pick_tenant(gate, Scope(frozenset({"acme"})), "globex")
    assert permissions.pick_tenant(gate, Scope(frozenset({"globex"})), None) == "globex"


def test_a_changed_policy_shows_its_diff_from_the_previous_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = permissions.view(Gate.load(None), ALL, "acme", [], data)["version"]
    assert first["previous"] is None and first["diff"] == ""
    edited = tmp_path / "policy"
    shutil.copytree(DEFAULT_DIR, edited)
    cedar = edited / "gate.cedar"
    cedar.write_text(cedar.read_text().replace("context.args.amount > 200",
                                               "context.args.amount > 300"))
    gate = Gate.load(edited)
    second = permissions.view(gate, ALL, "acme", [], data)
    assert second["version"]["previous"] == first["version"]
    assert "-when { context.args has amount && context.args.amount > 200 }" in \
        second["version"]["diff"]
    assert "+when { context.args has amount && context.args.amount > 300 }" in \
        second["version"]["diff"]
    agent = next(a for a in second["agents"] if a["agent"] == "refund-agent")
    refund = next(c for c in agent["cells"] if c["action"] == "create_refund")
    assert "amount ≤ 300: allow" in refund["summary"]
    assert len(policy_versions.history(data)) == 2


def test_cli_matrix_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentledger.cli.app import app

    monkeypatch.setenv("AGENTLEDGER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["tool-policy", "matrix", "--json", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["tenant"] == "acme" and found["agents"]
    result = CliRunner().invoke(app, ["tool-policy", "matrix", "--policy", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
