"""Where a policy's answer can change along a tool argument: the literals the Cedar
policies compare each argument with, and the pieces those literals cut its values into.

:mod:`agentledger.queries.permissions` asks the policy once per piece; why one sample per
piece is exact, and where that stops, is said there (and in docs/console.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

_COMPARE = {"<", "<=", ">", ">=", "==", "!="}


# -- the literals the policy compares arguments with -----------------------------------------


def _arg_name(node: Any) -> str | None:
    """``context.args.NAME`` → NAME (the EST form of an attribute path)."""
    if isinstance(node, dict) and set(node) == {"."}:
        inner = node["."]
        left = inner.get("left")
        if isinstance(left, dict) and set(left) == {"."} and left["."].get("attr") == "args" \
                and left["."].get("left") == {"Var": "context"}:
            return str(inner.get("attr"))
    return None


def _walk(node: Any, found: dict[str, set[Any]]) -> None:
    if isinstance(node, dict):
        for op, body in node.items():
            if op in _COMPARE and isinstance(body, dict):
                left, right = body.get("left"), body.get("right")
                for a, b in ((left, right), (right, left)):
                    name = _arg_name(a)
                    if name and isinstance(b, dict) and set(b) == {"Value"} \
                            and isinstance(b["Value"], int | str | bool):
                        found.setdefault(name, set()).add(b["Value"])
            _walk(body, found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found)


def policy_literals(policy_text: str) -> dict[str, set[Any]]:
    """Argument name → the literals any policy compares it with."""
    est = json.loads(cedarpy.policies_to_json_str(policy_text))
    found: dict[str, set[Any]] = {}
    for policy in est.get("staticPolicies", {}).values():
        _walk(policy.get("conditions", []), found)
    return found


# -- pieces of an argument's range ---------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One piece of one argument's values: ``absent``, a closed Long range (``lo``/``hi``
    None = unbounded), one value, or any value but the listed ones."""

    kind: str  # absent | range | value | other
    lo: int | None = None
    hi: int | None = None
    value: Any = None
    others: tuple[Any, ...] = ()

    def sample(self) -> Any:
        if self.kind == "range":
            if self.lo is not None:
                return self.lo
            return self.hi if self.hi is not None else 0
        if self.kind == "value":
            return self.value
        if self.kind == "other":
            return "agentledger-any-other-value"
        return None

    def holds(self, value: Any) -> bool:
        if self.kind == "absent":
            return value is None
        if value is None:
            return False
        if self.kind == "range":
            return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        if self.kind == "value":
            return bool(value == self.value)
        return value not in self.others

    def label(self, name: str) -> str:
        if self.kind == "absent":
            return f"no {name}"
        if self.kind == "value":
            return f"{name} = {json.dumps(self.value)}"
        if self.kind == "other":
            return f"{name} any other value" if self.others else f"any {name}"
        if self.lo is None and self.hi is None:
            return f"any {name}"
        if self.lo is None:
            return f"{name} ≤ {self.hi}"
        if self.hi is None:
            return f"{name} ≥ {self.lo}"
        return f"{name} = {self.lo}" if self.lo == self.hi else f"{self.lo} ≤ {name} ≤ {self.hi}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "range":
            out.update(min=self.lo, max=self.hi)
        elif self.kind == "value":
            out["value"] = self.value
        elif self.kind == "other":
            out["except"] = list(self.others)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Piece:
        return cls(d["kind"], d.get("min"), d.get("max"), d.get("value"),
                   tuple(d.get("except") or ()))


def pieces(kind: str, literals: Iterable[Any]) -> list[Piece]:
    """The pieces a Cedar type's values fall into given the literals the policy tests."""
    out = [Piece("absent")]
    if kind == "Long":
        cuts = sorted({int(v) for v in literals
                       if isinstance(v, int) and not isinstance(v, bool)})
        lo: int | None = None
        for c in cuts:
            if lo is None or lo <= c - 1:
                out.append(Piece("range", lo, c - 1))
            out.append(Piece("range", c, c))
            lo = c + 1
        out.append(Piece("range", lo, None))
    elif kind == "Boolean":
        out += [Piece("value", value=True), Piece("value", value=False)]
    else:
        values = sorted({str(v) for v in literals if isinstance(v, str)})
        out += [Piece("value", value=v) for v in values]
        out.append(Piece("other", others=tuple(values)))
    return out


def merge(a: Piece, b: Piece) -> Piece | None:
    if a.kind == b.kind == "range" and a.hi is not None and b.lo == a.hi + 1:
        return Piece("range", a.lo, b.hi)
    return None
