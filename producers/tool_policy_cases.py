"""Policy tests and policy diffs: the same decisions, asked of a table or of history.

A case file (YAML) is a list of calls with the decision the policy must give::

    cases:
      - name: gmail send is denied
        principal: acme/mail-assistant     # tenant/agent
        action: gmail:send_message          # tool:action
        args: {to: bob@example.com}
        expect: deny                        # allow | deny | escalate
        rule: gmail-never-send              # optional: the rule that must decide

Optional per case: ``idempotency_key`` (default true), ``resource_tenant`` (default the
principal's), ``approvals`` (distinct approvers so far, default 0) and
``approvals_required`` (for escalations).

A diff replays recorded ``tool.call`` events through two policies and lists the calls whose
decision (or deciding rule) would change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentledger.producers.gate import Decision, Gate, PolicyError

OUTCOMES = ("allow", "deny", "escalate")


@dataclass(frozen=True)
class CaseResult:
    name: str
    expect: str
    got: Decision
    ok: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "expect": self.expect, "decision": self.got.decision,
                "rule": self.got.rule, "reason": self.got.reason, "ok": self.ok,
                "why": self.why}


def load_cases(path: Path) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError(path, None, f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(path, mark.line + 1 if mark else None, "not valid YAML") from None
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list) or not cases:
        raise PolicyError(path, None, "expected a non-empty list under 'cases'")
    for i, case in enumerate(cases):
        ok = isinstance(case, dict) and "/" in str(case.get("principal", "")) and \
            ":" in str(case.get("action", "")) and case.get("expect") in OUTCOMES
        if not ok:
            raise PolicyError(path, None, f"case {i + 1}: needs principal TENANT/AGENT, "
                                          "action TOOL:ACTION and expect allow|deny|escalate")
    return cases


def decide_case(gate: Gate, case: dict[str, Any]) -> Decision:
    tenant, agent = str(case["principal"]).split("/", 1)
    tool, action = str(case["action"]).split(":", 1)
    key = case.get("idempotency_key", True)
    return gate.decide(tenant=tenant, agent=agent, tool=tool, action=action,
                       args=case.get("args") or {}, idempotency_key="k" if key else None,
                       resource_tenant=case.get("resource_tenant"),
                       approvals=int(case.get("approvals", 0)))


def run_cases(gate: Gate, cases: Iterable[dict[str, Any]]) -> list[CaseResult]:
    results = []
    for i, case in enumerate(cases):
        got = decide_case(gate, case)
        problems = []
        if got.decision != case["expect"]:
            problems.append(f"expected {case['expect']}, got {got.decision} ({got.rule})")
        if case.get("rule") and got.rule != case["rule"]:
            problems.append(f"expected rule {case['rule']}, got {got.rule}")
        need = case.get("approvals_required")
        if need is not None and got.approvals_required != int(need):
            problems.append(f"expected {need} approvers, got {got.approvals_required}")
        results.append(CaseResult(str(case.get("name") or f"case {i + 1}"), case["expect"],
                                  got, not problems, "; ".join(problems)))
    return results


def call_of(event: dict[str, Any]) -> dict[str, Any]:
    """A recorded ``tool.call`` event (with body) as a case to replay."""
    body = event["body"]
    return {"principal": f"{event['tenant']}/{event['agent']}",
            "action": f"{body['tool']}:{body['action']}", "args": body.get("args") or {},
            "idempotency_key": bool(body.get("idempotency_key")), "expect": "allow"}


def diff(old: Gate, new: Gate, calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls whose decision or deciding rule differs between ``old`` and ``new``."""
    changed = []
    for call in calls:
        a, b = decide_case(old, call), decide_case(new, call)
        if (a.decision, a.rule, a.approvals_required) != (b.decision, b.rule,
                                                          b.approvals_required):
            changed.append({**{k: call[k] for k in ("principal", "action", "args")},
                            "event_id": call.get("event_id"), "ts": call.get("ts"),
                            "old": a.decision, "old_rule": a.rule, "new": b.decision,
                            "new_rule": b.rule})
    return changed
