"""Reading a policy directory: the tool catalog (YAML) and the Cedar policies.

A policy directory holds ``catalog.yaml`` (agents with tenants and roles, tools with
actions, modes, risk levels and typed arguments, approval queues; per tool or action the
agent-side controls — ``timeout_s``, ``retries``, ``backoff_s``, ``backoff_max_s``,
``retry_on`` — and per action a JSON Schema of its arguments, ``schema``, checked with
``jsonschema_rs`` when the catalog loads) and one or more
``*.cedar`` files. The Cedar schema and entities are generated from the catalog, so there
is one place to say what exists, and Cedar's validator then refuses a policy that names an
unknown action, role or argument, or compares a string with a number.

Every problem is a :class:`PolicyError` naming the file and line: Cedar's parser reports
only a message, so the statement that fails is found by parsing statement by statement,
and the line inside it by parsing growing prefixes of that statement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cedarpy
import jsonschema_rs
import yaml

from agentledger.producers.controls import NO_CONTROLS, ToolControls

DEFAULT_DIR = Path(__file__).parent / "policies" / "default"
ARG_TYPES = ("Long", "String", "Boolean")
MODES = ("read", "write")
ANY_TENANT = "*"
"""In an agent's ``tenants``: the agent runs in every tenant (a fleet agent)."""
CONTROL_KEYS = ("timeout_s", "retries", "backoff_s", "backoff_max_s", "retry_on")
USER_QUEUE_PREFIX = "user:"
"""The queue of an end user asked to confirm (``user:<on_behalf_of>``)."""


class PolicyError(ValueError):
    """A policy directory that cannot be used; ``str()`` is ``file:line: reason``."""

    def __init__(self, file: Path | str, line: int | None, reason: str):
        self.file = str(file)
        self.line = line
        self.reason = reason
        self.catalog: Catalog | None = None
        """The directory's catalog when it alone still loads (the Cedar files failed):
        what a guard without a policy trusts for the mode of an action."""
        super().__init__(f"{self.file}:{line}: {reason}" if line else f"{self.file}: {reason}")


@dataclass(frozen=True)
class ToolAction:
    tool: str
    action: str
    mode: Literal["read", "write"]
    risk: str
    args: dict[str, str] = field(default_factory=dict)
    controls: ToolControls = NO_CONTROLS
    schema: dict[str, Any] | None = None
    """The JSON Schema the call's arguments must satisfy (None: not checked)."""

    @property
    def uid(self) -> str:
        return f"{self.tool}:{self.action}"


@dataclass(frozen=True)
class Queue:
    """An approval queue: who approves, how fast they should, and what expiry means."""

    role: str
    sla_s: float
    expires_in_s: float
    on_expiry: Literal["abort", "deny"]


@dataclass(frozen=True)
class Catalog:
    policy_id: str
    version: str
    agents: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # name -> (tenants, roles)
    tools: dict[str, str]  # tool -> risk
    actions: dict[str, ToolAction]  # "tool:action" -> ToolAction
    queues: dict[str, Queue]
    confirm: Queue = field(default_factory=lambda: Queue(USER_QUEUE_PREFIX, 300.0, 900.0,
                                                         "abort"))
    """How long an end user asked to confirm (``ask_user_to_confirm``) has: the catalog's
    ``confirm`` section (``sla_s``, ``expires_in_s``, ``on_expiry``)."""
    agent_keys: dict[str, str] = field(default_factory=dict)
    """Agent → its ed25519 public key (base64url, raw 32 bytes), for agents that sign their
    events (``Ledger(signing_key=<Ed25519PrivateKey>)``): ``verify`` then names every
    event of theirs unsigned or not signed by this key (docs/integrity.md)."""


def _require(cond: bool, path: Path, text: str, needle: str, reason: str) -> None:
    if not cond:
        raise PolicyError(path, _line_of(text, needle), reason)


def _line_of(text: str, needle: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if needle and needle in line:
            return i
    return None


def load_catalog(path: Path) -> Catalog:
    """Parse and check ``catalog.yaml``; every mistake names its line."""
    try:
        text = path.read_text()
        doc = yaml.safe_load(text) or {}
    except OSError as exc:
        raise PolicyError(path, None, f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(path, mark.line + 1 if mark else None,
                          f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    _require(isinstance(doc, dict), path, text, "", "expected a mapping at the top")
    for key in ("policy_id", "version", "agents", "tools", "queues"):
        _require(key in doc, path, text, "", f"missing {key!r}")
    agents, agent_keys = {}, {}
    for name, spec in (doc["agents"] or {}).items():
        ok = isinstance(spec, dict) and spec.get("tenants") and spec.get("roles") is not None
        _require(bool(ok), path, text, f"{name}:", f"agent {name}: needs tenants and roles")
        agents[str(name)] = (tuple(map(str, spec["tenants"])), tuple(map(str, spec["roles"])))
        if spec.get("public_key") is not None:
            _require(_is_ed25519_public(spec["public_key"]), path, text, f"{name}:",
                     f"agent {name}: public_key must be an ed25519 public key "
                     "(base64url of its 32 raw bytes, as `agentledger keys` prints)")
            agent_keys[str(name)] = str(spec["public_key"]).strip()
    tools, actions = {}, {}
    for tool, spec in (doc["tools"] or {}).items():
        _require(isinstance(spec, dict) and isinstance(spec.get("actions"), dict), path, text,
                 f"{tool}:", f"tool {tool}: needs a mapping of actions")
        tools[str(tool)] = str(spec.get("risk", "low"))
        tool_controls = _controls(spec, NO_CONTROLS, path, text, f"{tool}:", str(tool))
        for action, a in spec["actions"].items():
            where = f"{action}:"
            _require(isinstance(a, dict) and a.get("mode") in MODES, path, text, where,
                     f"{tool}.{action}: mode must be read or write")
            args = {str(k): str(v) for k, v in (a.get("args") or {}).items()}
            bad = [k for k, v in args.items() if v not in ARG_TYPES]
            _require(not bad, path, text, where,
                     f"{tool}.{action}: argument types must be one of {', '.join(ARG_TYPES)}")
            item = ToolAction(str(tool), str(action), a["mode"], str(a.get("risk", "low")), args,
                              _controls(a, tool_controls, path, text, where, f"{tool}.{action}"),
                              _schema(a, path, text, where, f"{tool}.{action}"))
            actions[item.uid] = item
    queues = {}
    for role, q in (doc["queues"] or {}).items():
        queues[str(role)] = _queue(str(role), q, path, text, f"{role}:")
    confirm = _queue(USER_QUEUE_PREFIX, doc["confirm"], path, text, "confirm:") \
        if doc.get("confirm") is not None else Queue(USER_QUEUE_PREFIX, 300.0, 900.0, "abort")
    return Catalog(str(doc["policy_id"]), str(doc["version"]), agents, tools, actions, queues,
                   confirm, agent_keys)


def _is_ed25519_public(text: Any) -> bool:
    import base64
    import binascii

    if not isinstance(text, str):
        return False
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 32


def _queue(role: str, q: Any, path: Path, text: str, where: str) -> Queue:
    try:
        ok = isinstance(q, dict) and q.get("on_expiry") in ("abort", "deny") and \
            float(q.get("sla_s", -1)) >= 0 and float(q.get("expires_in_s", -1)) > 0
    except (TypeError, ValueError):
        ok = False
    _require(ok, path, text, where,
             f"queue {role}: needs sla_s >= 0, expires_in_s > 0, on_expiry abort|deny")
    return Queue(role, float(q["sla_s"]), float(q["expires_in_s"]), q["on_expiry"])


def _controls(spec: dict[str, Any], base: ToolControls, path: Path, text: str, where: str,
              name: str) -> ToolControls:
    """The controls a tool or action declares, over ``base`` (the tool's, for an action)."""
    given = {k: spec[k] for k in CONTROL_KEYS if k in spec}
    if not given:
        return base
    merged: dict[str, Any] = {}
    try:
        for key in ("timeout_s", "backoff_s", "backoff_max_s"):
            if key in given:
                value = given[key]
                if isinstance(value, bool) or float(value) <= 0:
                    raise ValueError
                merged[key] = float(value)
        if "retries" in given:
            retries = given["retries"]
            if isinstance(retries, bool) or not isinstance(retries, int) \
                    or not 0 <= retries <= 10:
                raise ValueError
            merged["retries"] = retries
        if "retry_on" in given:
            found = given["retry_on"] or []
            if not isinstance(found, list) or not all(
                    isinstance(r, str) or (isinstance(r, int) and not isinstance(r, bool))
                    for r in found):
                raise ValueError
            merged["retry_on"] = tuple(found)
    except (TypeError, ValueError):
        raise PolicyError(path, _line_of(text, where),
                          f"{name}: timeout_s, backoff_s and backoff_max_s must be numbers "
                          "> 0, retries an integer 0..10, retry_on a list of exception "
                          "names, HTTP statuses and 'timeout'") from None
    return replace(base, **merged)


def _schema(spec: dict[str, Any], path: Path, text: str, where: str,
            name: str) -> dict[str, Any] | None:
    """The action's argument schema, refused at load if it is no valid JSON Schema."""
    schema = spec.get("schema")
    if schema is None:
        return None
    _require(isinstance(schema, dict), path, text, where,
             f"{name}: schema must be a JSON Schema object")
    try:
        jsonschema_rs.validator_for(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PolicyError(path, _line_of(text, where),
                          f"{name}: schema is not a valid JSON Schema: {first}") from None
    return dict(schema)


# -- Cedar schema and entities from the catalog -----------------------------------------------


def _groups(action: ToolAction) -> list[str]:
    return [f"mode:{action.mode}", f"risk:{action.risk}", f"tool:{action.tool}"]


def cedar_schema(catalog: Catalog) -> dict[str, Any]:
    """The Cedar JSON schema: Agent (in Role), Tool, and one action per tool action, each
    in its mode, risk and tool groups, with a context typed by the catalog's arguments."""
    groups = sorted({g for a in catalog.actions.values() for g in _groups(a)})
    actions: dict[str, Any] = {g: {} for g in groups}
    for uid, a in catalog.actions.items():
        args = {k: {"type": v, "required": False} for k, v in a.args.items()}
        actions[uid] = {
            "memberOf": [{"id": g} for g in _groups(a)],
            "appliesTo": {"principalTypes": ["Agent"], "resourceTypes": ["Tool"], "context": {
                "type": "Record", "attributes": {
                    "tenant": {"type": "String"}, "mode": {"type": "String"},
                    "idempotency_key": {"type": "Boolean"}, "approvals": {"type": "Long"},
                    "args": {"type": "Record", "attributes": args}}}}}
    string = {"type": "String"}
    return {"": {"entityTypes": {
        "Role": {},
        "Agent": {"memberOfTypes": ["Role"], "shape": {"type": "Record", "attributes": {
            "tenant": string, "name": string}}},
        "Tool": {"shape": {"type": "Record", "attributes": {"risk": string}}},
    }, "actions": actions}}


def agent_entities(catalog: Catalog, names: list[str], tenant: str) -> list[dict[str, Any]]:
    """The entities of agents ``names`` in ``tenant`` (``Agent::"tenant/name"``)."""
    return [{"uid": {"type": "Agent", "id": f"{tenant}/{name}"},
             "attrs": {"tenant": tenant, "name": name},
             "parents": [{"type": "Role", "id": r} for r in catalog.agents[name][1]]}
            for name in names]


def cedar_entities(catalog: Catalog) -> list[dict[str, Any]]:
    roles = sorted({r for _, rs in catalog.agents.values() for r in rs})
    out: list[dict[str, Any]] = [{"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []}
                                 for r in roles]
    for name, (tenants, _) in catalog.agents.items():
        for t in tenants:
            if t != ANY_TENANT:
                out += agent_entities(catalog, [name], t)
    out += [{"uid": {"type": "Tool", "id": t}, "attrs": {"risk": risk}, "parents": []}
            for t, risk in catalog.tools.items()]
    groups = sorted({g for a in catalog.actions.values() for g in _groups(a)})
    out += [{"uid": {"type": "Action", "id": g}, "attrs": {}, "parents": []} for g in groups]
    out += [{"uid": {"type": "Action", "id": uid}, "attrs": {},
             "parents": [{"type": "Action", "id": g} for g in _groups(a)]}
            for uid, a in catalog.actions.items()]
    return out


# -- Cedar policies with locations ------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    file: Path
    line: int  # where the policy starts
    text: str
    text_line: int  # where ``text`` starts (it may begin with blank lines)


def statements(path: Path, text: str) -> list[Statement]:
    """Split Cedar text into policies at ``;`` outside strings and comments, keeping the
    line each starts on (Cedar numbers policies ``policy0..`` in this order)."""
    out: list[Statement] = []
    buf: list[str] = []
    line, start, i, n = 1, None, 0, len(text)
    text_line = 1
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if start is None and not c.isspace():
            start = line
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            buf.append(text[i:j + 1])
            line += text[i:j + 1].count("\n")
            i = j + 1
            continue
        buf.append(c)
        if c == "\n":
            line += 1
        if c == ";":
            out.append(Statement(path, start or line, "".join(buf), text_line))
            buf, start, text_line = [], None, line
        i += 1
    if "".join(buf).strip():
        out.append(Statement(path, start or line, "".join(buf), text_line))
    return out


def _locate(stmt: Statement, message: str) -> int:
    """The line of ``stmt`` where Cedar's parse error appears: the first prefix of the
    statement that fails with the same message."""
    lines = stmt.text.splitlines(keepends=True)
    for k in range(1, len(lines) + 1):
        try:
            cedarpy.policies_to_json_str("".join(lines[:k]))
        except ValueError as exc:
            if str(exc) == message:
                return stmt.text_line + k - 1
    return stmt.line


def parse_policies(files: list[Path]) -> tuple[str, list[Statement], dict[str, Any]]:
    """All policy text, its statements, and the Cedar JSON form (annotations and all)."""
    stmts: list[Statement] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyError(path, None, f"cannot read: {exc.strerror}") from None
        for stmt in statements(path, text):
            try:
                cedarpy.policies_to_json_str(stmt.text)
            except ValueError as exc:
                raise PolicyError(path, _locate(stmt, str(exc)), str(exc)) from None
            stmts.append(stmt)
    if not stmts:
        raise PolicyError(files[0] if files else "policies", None, "no policies")
    text = "\n".join(s.text for s in stmts)
    return text, stmts, json.loads(cedarpy.policies_to_json_str(text))


def fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:8]
