"""What each agent may do: the tool policy evaluated cell by cell, never kept by hand.

For every agent of a tenant and every tool action of the catalog, the *loaded* Cedar
policy (:class:`agentledger.producers.gate.Gate`, the same object that gates calls) is
asked, and its answers are folded into a matrix: allow, deny, or needs N approvals from
role R, each naming the rule (``@id``) that decided and its reason.

Conditions on arguments are found from the policy itself, not from a list: every literal
the policy compares a typed argument with (``context.args.amount > 200``) is read from the
policy's JSON form (``cedarpy.policies_to_json_str``) and cuts that argument's range into
pieces (below, at and between the literals, and "absent"). Each piece is asked once and
adjacent pieces with the same answers merge into *bands* ("amount ≤ 200: allow",
"201 ≤ amount ≤ 800: 2 x finance", …). Each band also carries what the policy says once
the approvals are in, without an idempotency key, and for another tenant's resource.

Why this is exact, and where it stops (docs/console.md, "Permissions"): a Cedar condition
that only compares an argument with literals is constant between consecutive literals, so
one sample per piece is the answer for the whole piece. Conditions the literal scan cannot
see are not split into bands: arithmetic on arguments (``amount * 2 > x``), one argument
compared with another, ``like`` patterns on strings, entity attributes that vary per
principal. Such a cell still shows the policy's answer for its sample; the cases test
(:func:`decide`, ``tests/shell/test_permissions.py``) is the guard that the matrix and the
gate agree on every case the policy's authors wrote down.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentledger.auth import Principal
from agentledger.producers.gate import Decision, Gate
from agentledger.producers.tool_policy_files import ANY_TENANT
from agentledger.queries.common import Scope
from agentledger.queries.policy_bands import Piece, merge, pieces, policy_literals

MAX_COMBINATIONS = 256
"""Pieces per action at most (the product over its arguments); beyond it, the first ones."""
OTHER_TENANT_SUFFIX = "~other"


def _outcome(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"decision": d.decision, "rule": d.rule, "reason": d.reason}
    if d.decision == "escalate":
        out["approvals_required"] = d.approvals_required
        out["approver_role"] = d.approver_role
    return out


def outcome_text(o: Mapping[str, Any]) -> str:
    """``allow``, ``deny`` or ``2 x finance``, with the rule: what a cell shows."""
    what = (f"{o['approvals_required']} \u00d7 {o['approver_role']}" if o["decision"] == "escalate"
            else o["decision"])
    return f"{what} ({o['rule']})"


def _policy_text(gate: Gate) -> str:
    return "\n".join(p.read_text() for p in sorted(gate.source.glob("*.cedar")))


# -- the matrix ---------------------------------------------------------------------------------


def _ask(gate: Gate, tenant: str, agent: str, tool: str, action: str,
         args: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"tenant": tenant, "agent": agent, "tool": tool, "action": action,
                            "args": args}
    first = gate.decide(**base, idempotency_key="k")
    answers: dict[str, Any] = {"outcome": _outcome(first)}
    if first.decision == "escalate":
        answers["after_approvals"] = _outcome(gate.decide(
            **base, idempotency_key="k", approvals=first.approvals_required))
    answers["without_idempotency_key"] = _outcome(gate.decide(**base, idempotency_key=None))
    answers["other_tenant"] = _outcome(gate.decide(
        **base, idempotency_key="k", resource_tenant=tenant + OTHER_TENANT_SUFFIX))
    return answers


def _band_text(band: Mapping[str, Any]) -> str:
    text = outcome_text(band["outcome"])
    after = band.get("after_approvals")
    if after and after["decision"] != "allow":
        text += f", then {outcome_text(after)}"
    return f"{band['when']}: {text}" if band["when"] else text


def cell(gate: Gate, tenant: str, agent: str, uid: str,
         literals: Mapping[str, set[Any]]) -> dict[str, Any]:
    """One tool action for one agent: its bands and a summary."""
    spec = gate.catalog.actions[uid]
    names = sorted(spec.args)
    per_arg = [pieces(spec.args[n], literals.get(n, ())) for n in names]
    bands: list[dict[str, Any]] = []
    combos = itertools.islice(itertools.product(*per_arg), MAX_COMBINATIONS)
    for combo in combos:
        args = {n: p.sample() for n, p in zip(names, combo, strict=True)
                if p.kind != "absent"}
        answers = _ask(gate, tenant, agent, spec.tool, spec.action, args)
        band = {"match": {n: p for n, p in zip(names, combo, strict=True)}, **answers}
        prev = bands[-1] if bands else None
        if prev is not None and len(names) == 1 and all(
                prev[k] == band.get(k) for k in answers) and len(prev) == len(band):
            merged = merge(prev["match"][names[0]], combo[0])
            if merged is not None:
                prev["match"] = {names[0]: merged}
                continue
        bands.append(band)
    answer_keys = ("outcome", "after_approvals", "without_idempotency_key", "other_tenant")
    if len({json.dumps([b.get(k) for k in answer_keys]) for b in bands}) == 1:
        bands = [{**bands[0], "match": {}}]  # the same answer whatever the arguments
    for band in bands:
        band["when"] = ", ".join(band["match"][n].label(n) for n in band["match"])
        band["match"] = {n: p.as_dict() for n, p in band["match"].items()}
    decisions = {b["outcome"]["decision"] for b in bands}
    rules = list(dict.fromkeys(b["outcome"]["rule"] for b in bands))
    notes: list[str] = []
    for band in bands:
        for key, what in (("without_idempotency_key", "without an idempotency key"),
                          ("other_tenant", "on another tenant's resource")):
            if band[key] != band["outcome"]:
                note = f"{what}: {outcome_text(band[key])}"
                if note not in notes:
                    notes.append(note)
    return {"tool": spec.tool, "action": spec.action, "mode": spec.mode, "risk": spec.risk,
            "args": dict(spec.args),
            "decision": decisions.pop() if len(decisions) == 1 else "conditional",
            "rules": rules, "summary": "; ".join(_band_text(b) for b in bands),
            "notes": notes, "bands": bands}


def agents_of(gate: Gate, tenant: str) -> list[str]:
    """The catalog's agents in ``tenant`` (named there, or fleet agents: ``"*"``)."""
    return [name for name, (tenants, _) in gate.catalog.agents.items()
            if tenant in tenants or ANY_TENANT in tenants]


def tenants_of(gate: Gate) -> list[str]:
    """The tenants the catalog names (fleet agents run in any tenant besides)."""
    return sorted({t for tenants, _ in gate.catalog.agents.values() for t in tenants
                   if t != ANY_TENANT})


@functools.lru_cache(maxsize=256)
def matrix(gate: Gate, tenant: str) -> dict[str, Any]:
    """Every agent of ``tenant`` x every tool action → its cell (see the module doc).
    Cached per (gate, tenant): a loaded gate never changes; callers must not mutate it."""
    literals = policy_literals(_policy_text(gate))
    agents = []
    for name in agents_of(gate, tenant):
        roles = list(gate.catalog.agents[name][1])
        cells = [cell(gate, tenant, name, uid, literals) for uid in gate.catalog.actions]
        agents.append({"agent": name, "roles": roles, "cells": cells})
    return {"policy_id": gate.policy_id, "policy_version": gate.version, "tenant": tenant,
            "tools": {t: [a.action for a in gate.catalog.actions.values() if a.tool == t]
                      for t in gate.catalog.tools},
            "queues": {q.role: {"sla_s": q.sla_s, "expires_in_s": q.expires_in_s,
                                "on_expiry": q.on_expiry} for q in gate.catalog.queues.values()},
            "agents": agents,
            "limits": "bands come from literals the policy compares arguments with; "
                      "fractional Long arguments round up before the policy sees them"}


def decide(found: Mapping[str, Any], gate: Gate, case: Mapping[str, Any]) -> dict[str, Any]:
    """What the *matrix* ``found`` says of a case of a cases file (principal
    ``tenant/agent``, action ``tool:action``, args, approvals, idempotency_key,
    resource_tenant): the lookup the permissions page does by eye. ``gate`` only types
    the arguments (a wrong type is the gate's ``arguments`` deny)."""
    tenant, agent = str(case["principal"]).split("/", 1)
    tool, action = str(case["action"]).split(":", 1)
    if tenant != found["tenant"]:
        raise ValueError(f"the matrix is of tenant {found['tenant']!r}, not {tenant!r}")
    row = next((a for a in found["agents"] if a["agent"] == agent), None)
    cell_ = None if row is None else next(
        (c for c in row["cells"] if (c["tool"], c["action"]) == (tool, action)), None)
    if cell_ is None:
        return {"decision": "deny", "rule": "catalog"}
    try:
        typed = gate.request(tenant=tenant, agent=agent, tool=tool, action=action,
                             args=case.get("args") or {})["context"]["args"]
    except ValueError:
        return {"decision": "deny", "rule": "arguments"}
    for band in cell_["bands"]:
        if all(Piece.from_dict(m).holds(typed.get(n)) for n, m in band["match"].items()):
            break
    else:  # cannot happen: the pieces cover every value
        raise LookupError(f"no band of {tool}:{action} holds {typed}")
    resource_tenant = case.get("resource_tenant")
    if resource_tenant and resource_tenant != tenant:
        return dict(band["other_tenant"])
    if not case.get("idempotency_key", True):
        return dict(band["without_idempotency_key"])
    first = band["outcome"]
    if first["decision"] == "escalate" and \
            int(case.get("approvals", 0)) >= first["approvals_required"]:
        return dict(band["after_approvals"])
    return dict(first)


# -- who holds the approver roles ----------------------------------------------------------------


def role_holders(gate: Gate, principals: Iterable[Principal], tenant: str
                 ) -> list[dict[str, Any]]:
    """Each approval queue (and any other role a key holds) with the keys of ``tenant``
    (or operator keys) that hold it: name and state, never the key or its digest.
    ``principals``: the keys the server accepts (revoked ones are not among them)."""
    roles: dict[str, list[dict[str, Any]]] = {r: [] for r in gate.catalog.queues}
    now = time.time()
    for who in principals:
        if not who.allowed(tenant):
            continue
        expired = who.expires_at is not None and who.expires_at <= now
        for role in sorted(who.roles):
            roles.setdefault(role, []).append({
                "name": who.name, "state": "expired" if expired else "active",
                "operator": who.operator, "acts_for": sorted(who.agents)})
    out = []
    for role, holders in roles.items():
        queue = gate.catalog.queues.get(role)
        out.append({"role": role, "queue": queue is not None,
                    "sla_s": queue.sla_s if queue else None,
                    "on_expiry": queue.on_expiry if queue else None,
                    "holders": sorted(holders, key=lambda h: h["name"])})
    return out


# -- what the route, the command and the page show ---------------------------------------------


def pick_tenant(gate: Gate, scope: Scope, tenant: str | None) -> str:
    """The tenant to show: the one asked (Forbidden outside the key's scope), else the
    key's first, else (operator) the catalog's first."""
    if tenant:
        scope.narrow(tenant)
        return tenant
    if scope.tenants:
        return sorted(scope.tenants)[0]
    return (tenants_of(gate) or ["default"])[0]


def view(gate: Gate, scope: Scope, tenant: str | None, principals: Iterable[Principal],
         data_dir: Path | None) -> dict[str, Any]:
    """The matrix of one tenant, who holds each approver role, and the policy version with
    its diff from the previous one (:mod:`agentledger.queries.policy_versions`)."""
    from agentledger.queries import policy_versions

    chosen = pick_tenant(gate, scope, tenant)
    found = dict(matrix(gate, chosen))  # a copy: the cached matrix stays as it was
    found["roles"] = role_holders(gate, principals, chosen)
    found["version"] = (policy_versions.version_view(gate, data_dir) if data_dir is not None
                        else {"version": gate.version, "previous": None, "diff": ""})
    if scope.tenants is not None:  # the policy is shared: other tenants' names stay unsaid
        for other in set(tenants_of(gate)) - scope.tenants:
            found["version"]["diff"] = re.sub(rf"\b{re.escape(other)}\b", "(another tenant)",
                                              found["version"]["diff"])
    found["tenants"] = sorted(scope.tenants) if scope.tenants is not None else tenants_of(gate)
    return found
