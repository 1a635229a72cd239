"""The tool gate: may this agent call this tool action with these arguments, now?

A :class:`Gate` is a Cedar policy set evaluated in process (no network, tens of
microseconds per decision; see ``bench/bench_policy.py`` and ``docs/policy.md``). The
principal is the agent (``Agent::"tenant/agent"``, member of its roles), the action is
``Action::"tool:action"`` (member of its mode, risk and tool groups), the resource is the
tool, and the context carries the resource's tenant, the call's mode, whether it has an
idempotency key, how many distinct approvers have approved it, and the tool arguments
after redaction, typed by the catalog (so ``context.args.amount > 200`` works).

Cedar answers allow or deny. Three outcomes come from annotations: a deny whose deciding
forbid policies all carry ``@approvals`` and ``@approver_role`` is an *escalation* (ask that
many distinct approvers of that queue); any other deny is final; an allow is an allow.
Every :class:`Decision` names the policy version (catalog version + content hash), the
rule (the deciding policy's ``@id``) and the reason (its ``@reason``).

Before Cedar, an action whose catalog entry declares a JSON Schema (``schema``) has its
arguments validated strictly (:meth:`Gate.check_args`, ``jsonschema_rs``, compiled once
at load): an invalid call is a deny with rule ``schema`` whose reason names the field and
what it breaks, never the value (a secret in a wrong field must not land in the ledger),
so a model can re-prompt on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cedarpy
import jsonschema_rs
import orjson

from agentledger.producers.controls import ToolControls
from agentledger.producers.tool_policy_files import (
    ANY_TENANT,
    DEFAULT_DIR,
    Catalog,
    PolicyError,
    Queue,
    agent_entities,
    cedar_entities,
    cedar_schema,
    fingerprint,
    load_catalog,
    parse_policies,
)

GUARD_POLICY_ID = "agentledger.control"
"""The ``policy_id`` of a refusal by the control loop (breaker, safe mode, budget,
override), beside the Cedar policy's own ids."""

__all__ = ["DEFAULT_DIR", "Decision", "Gate", "PolicyError"]

Outcome = Literal["allow", "deny", "escalate"]
DEFAULT_DENY = "default-deny"
SCHEMA_RULE = "schema"
"""The rule of a deny for arguments that break the action's JSON Schema."""
MAX_REMEMBERED_DECISIONS = 10_000
"""Distinct Cedar requests a gate remembers the answer to (see :meth:`Gate._authorize`)."""


@dataclass(frozen=True, slots=True)
class Decision:
    decision: Outcome
    rule: str
    reason: str
    policy_id: str
    policy_version: str
    approvals_required: int = 0
    approver_role: str = ""
    queue: Queue | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


@dataclass(frozen=True, slots=True)
class _Rule:
    rule: str
    reason: str
    effect: str
    approvals: int
    role: str


class Gate:
    """One loaded policy directory. Immutable and thread-safe; load once, decide often."""

    def __init__(self, catalog: Catalog, policies: cedarpy.PolicySet,
                 entities: cedarpy.Entities, rules: dict[str, _Rule], version: str,
                 source: Path):
        self.catalog = catalog
        self.policy_id = catalog.policy_id
        self.version = version
        self.source = source
        self._policies = policies
        self._entities = entities
        self._rules = rules
        self._fleet = [name for name, (tenants, _) in catalog.agents.items()
                       if ANY_TENANT in tenants]
        self._by_tenant: dict[str, cedarpy.Entities] = {}
        self._decided: dict[bytes, Decision] = {}
        self._validators = {uid: jsonschema_rs.validator_for(a.schema)
                            for uid, a in catalog.actions.items() if a.schema is not None}

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Gate:
        """Load ``catalog.yaml`` and every ``*.cedar`` of ``directory`` (the packaged
        default policy if None). Raises :class:`PolicyError` with file, line and reason."""
        root = Path(directory) if directory is not None else DEFAULT_DIR
        if not root.is_dir():
            raise PolicyError(root, None, "not a policy directory")
        catalog_path = root / "catalog.yaml"
        catalog = load_catalog(catalog_path)
        files = sorted(root.glob("*.cedar"))
        if not files:
            raise PolicyError(root, None, "no *.cedar policy files")
        text, stmts, est = parse_policies(files)
        schema = cedar_schema(catalog)
        check = cedarpy.validate_policies(text, json.dumps(schema))
        if not check.validation_passed:
            first = check.errors[0]
            where = stmts[int(first.policy_id[6:])] if first.policy_id.startswith("policy") \
                else stmts[0]
            raise PolicyError(where.file, where.line, f"schema: {first.error}")
        rules = _rules(est["staticPolicies"], stmts, catalog)
        entities = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(catalog)))
        version = f"{catalog.version}+{fingerprint([catalog_path, *files])}"
        return cls(catalog, cedarpy.PolicySet.from_str(text), entities, rules, version, root)

    # -- deciding ---------------------------------------------------------------------------

    def request(self, *, tenant: str, agent: str, tool: str, action: str,
                args: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
                resource_tenant: str | None = None, approvals: int = 0) -> dict[str, Any]:
        """The Cedar request for a call (raises ValueError on arguments of the wrong type)."""
        spec = self.catalog.actions[f"{tool}:{action}"]
        typed = {}
        for name, kind in spec.args.items():
            if args is not None and name in args and args[name] is not None:
                typed[name] = _coerce(name, args[name], kind)
        return {"principal": {"type": "Agent", "id": f"{tenant}/{agent}"},
                "action": {"type": "Action", "id": spec.uid},
                "resource": {"type": "Tool", "id": tool},
                "context": {"tenant": resource_tenant or tenant, "mode": spec.mode,
                            "idempotency_key": bool(idempotency_key),
                            "approvals": int(approvals), "args": typed}}

    def decide(self, *, tenant: str, agent: str, tool: str, action: str,
               args: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
               resource_tenant: str | None = None, approvals: int = 0) -> Decision:
        """Allow, deny or escalate one call. Unknown agents and actions are denied (least
        privilege), as are arguments a policy cannot read with their declared type."""
        if f"{tool}:{action}" not in self.catalog.actions:
            return self._deny("catalog", f"{tool}:{action} is not in the tool catalog")
        tenants = self.catalog.agents[agent][0] if agent in self.catalog.agents else ()
        if tenant not in tenants and ANY_TENANT not in tenants:
            return self._deny("catalog", f"agent {tenant}/{agent} is not in the catalog")
        entities = self._entities if tenant in tenants else self._tenant_entities(tenant)
        try:
            request = self.request(tenant=tenant, agent=agent, tool=tool, action=action,
                                   args=args, idempotency_key=idempotency_key,
                                   resource_tenant=resource_tenant, approvals=approvals)
        except ValueError as exc:
            return self._deny("arguments", str(exc))
        decision = self._authorize(request, entities)
        if decision.decision != "escalate" or approvals >= decision.approvals_required:
            return decision
        # Approvers are asked only for a call their votes could let through: asked again
        # as if they had voted, a call still refused (say, by no permit for this agent)
        # is refused now, with that reason, rather than escalated to no avail.
        voted = {**request, "context": {**request["context"],
                                        "approvals": decision.approvals_required}}
        after = self._authorize(voted, entities)
        return decision if after.decision == "allow" else after

    def _authorize(self, request: dict[str, Any], entities: cedarpy.Entities) -> Decision:
        """Cedar's answer to ``request``, remembered: it depends on nothing but the
        request, the policies and the entities, and the last two never change in a
        loaded gate. A request carries only what a policy reads (the catalog's typed
        arguments, amounts as whole numbers), so calls repeat it: every read of one
        action by one agent is one request. Cedar costs 30 to 70 µs a call in
        ``cedarpy`` (it holds the GIL), the lookup about 2 µs. Bounded: emptied when
        full, as a cache of a pure function may be."""
        try:
            key = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: Cedar says why
            return self._outcome(cedarpy.is_authorized(request, self._policies, entities))
        found = self._decided.get(key)
        if found is None:
            found = self._outcome(cedarpy.is_authorized(request, self._policies, entities))
            if len(self._decided) >= MAX_REMEMBERED_DECISIONS:
                self._decided.clear()
            self._decided[key] = found
        return found

    def _tenant_entities(self, tenant: str) -> cedarpy.Entities:
        """The entities plus every fleet agent (``tenants: ["*"]``) in ``tenant``, built
        once per tenant."""
        found = self._by_tenant.get(tenant)
        if found is None:
            extra = json.dumps(agent_entities(self.catalog, self._fleet, tenant))
            found = self._by_tenant[tenant] = self._entities.with_added_json_str(extra)
        return found

    def _outcome(self, result: cedarpy.AuthzResult) -> Decision:
        reasons = [self._rules[r] for r in result.diagnostics.reasons if r in self._rules]
        errors = result.diagnostics.errors
        if result.allowed:
            first = reasons[0] if reasons else _Rule("allow", "", "permit", 0, "")
            return Decision("allow", first.rule, first.reason, self.policy_id, self.version)
        if not reasons:
            why = "no policy permits this (least privilege)"
            if errors:
                why += f"; policy errors: {'; '.join(errors)[:500]}"
            return self._deny(DEFAULT_DENY, why)
        hard = [r for r in reasons if not r.approvals]
        if hard:
            return self._deny(hard[0].rule, hard[0].reason)
        top = max(reasons, key=lambda r: r.approvals)
        return Decision("escalate", top.rule, top.reason, self.policy_id, self.version,
                        top.approvals, top.role, self.catalog.queues[top.role])

    def _deny(self, rule: str, reason: str) -> Decision:
        return Decision("deny", rule, reason, self.policy_id, self.version)

    def check_args(self, tool: str, action: str, args: Mapping[str, Any]) -> str | None:
        """Why ``args`` break the action's declared JSON Schema (every problem, each
        naming its field), or None if they hold or no schema is declared."""
        validator = self._validators.get(f"{tool}:{action}")
        if validator is None:
            return None
        problems = [_problem(e) for e in validator.iter_errors(dict(args))]
        if not problems:
            return None
        return f"{tool}:{action} arguments break the tool's schema: " + "; ".join(problems)

    def schema_deny(self, tool: str, action: str, args: Mapping[str, Any]) -> Decision | None:
        """The ``schema`` deny for ``args``, or None when they hold."""
        why = self.check_args(tool, action, args)
        return self._deny(SCHEMA_RULE, why[:4096]) if why is not None else None

    def controls_of(self, tool: str, action: str) -> ToolControls | None:
        spec = self.catalog.actions.get(f"{tool}:{action}")
        return spec.controls if spec else None

    def schema_of(self, tool: str, action: str) -> dict[str, Any] | None:
        spec = self.catalog.actions.get(f"{tool}:{action}")
        return spec.schema if spec else None

    def queue(self, role: str) -> Queue | None:
        return self.catalog.queues.get(role)

    def mode_of(self, tool: str, action: str) -> str | None:
        spec = self.catalog.actions.get(f"{tool}:{action}")
        return spec.mode if spec else None

    def risk_of(self, tool: str, action: str) -> str | None:
        spec = self.catalog.actions.get(f"{tool}:{action}")
        return spec.risk if spec else None


def _field(path: Any) -> str:
    """A JSON path as a model reads it: ``items[0].sku``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: Any) -> str:
    """One schema violation, naming the field and the rule broken, without the value."""
    kind = error.kind
    where = _field(error.instance_path)
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        name = _field([*error.instance_path, kind.property])
        return f"argument {name!r} is required"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        names = ", ".join(repr(_field([*error.instance_path, u])) for u in kind.unexpected)
        return f"argument {names} is not allowed (no such field in the schema)"
    subject = f"argument {where!r}" if where else "the arguments"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Type):
        return f"{subject} must be of type {' or '.join(map(str, kind.types))}"
    keyword = str(error.schema_path[-1]) if error.schema_path else type(kind).__name__
    limit = getattr(kind, "limit", None)
    if isinstance(limit, (int, float, str)) and not isinstance(limit, bool):
        return f"{subject} breaks {keyword!r} ({limit})"
    return f"{subject} breaks {keyword!r}"


def _coerce(name: str, value: Any, kind: str) -> Any:
    """A Python value as the catalog's Cedar type. Fractional amounts round UP, so a
    threshold test like ``amount <= 200`` never lets 200.5 through."""
    if kind == "Long":
        if isinstance(value, bool):
            raise ValueError(f"argument {name}: expected a number, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return math.ceil(value)
        if isinstance(value, str):
            try:
                return math.ceil(float(value))
            except ValueError:
                pass
        raise ValueError(f"argument {name}: expected a number, got {type(value).__name__}")
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"argument {name}: expected true or false")
    return str(value)


def _rules(static: dict[str, Any], stmts: list[Any], catalog: Catalog) -> dict[str, _Rule]:
    """Per Cedar policy id: its @id, @reason, effect and escalation annotations, checked."""
    rules: dict[str, _Rule] = {}
    seen: dict[str, int] = {}
    for pid, policy in static.items():
        stmt = stmts[int(pid[6:])]
        notes = policy.get("annotations") or {}
        rule = notes.get("id")
        if not rule:
            raise PolicyError(stmt.file, stmt.line, "every policy needs an @id(\"...\")")
        if rule in seen:
            raise PolicyError(stmt.file, stmt.line,
                              f"@id({rule!r}) is used twice (first at line {seen[rule]})")
        seen[rule] = stmt.line
        approvals, role = 0, notes.get("approver_role", "")
        if "approvals" in notes or role:
            if policy["effect"] != "forbid":
                raise PolicyError(stmt.file, stmt.line, "@approvals only makes sense on forbid")
            try:
                approvals = int(notes.get("approvals", ""))
            except ValueError:
                approvals = 0
            if not 1 <= approvals <= 10:
                raise PolicyError(stmt.file, stmt.line, "@approvals must be 1..10")
            if role not in catalog.queues:
                raise PolicyError(stmt.file, stmt.line,
                                  f"@approver_role({role!r}) is not a queue in catalog.yaml")
        rules[pid] = _Rule(rule, notes.get("reason", ""), policy["effect"], approvals, role)
    return rules
