"""Facts: what the fold stage tells the decide stage about one event, and nothing more.

The fold reads whole events (keyed by run); the decide stage (keyed by tenant) needs a
few fields of some of them. One small typed tuple per kind of fact, shared by both
stages, the backtest and the benches, so a field has one name everywhere.

On the wire (the ``<group>-tenant-facts`` topic) a fact is a compact JSON array, its kind
as a one-letter tag first and then its fields in order: ``["r", ts, agent, tool, ...]``.
A tenant's facts from one fetch travel as one record, so the tag costs a byte, not a key
per field. :func:`to_wire` and :func:`from_wire` are the only places that know the tags.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ToolResult(NamedTuple):
    """A tool call's outcome: feeds breakers, safe mode and tool health."""

    ts: float
    agent: str
    tool: str
    status: str
    latency_ms: float
    event_id: str
    error_type: str


class ToolCall(NamedTuple):
    ts: float
    agent: str
    workflow: str


class Spend(NamedTuple):
    """A model call's cost, in integer micro-dollars (sums stay exact)."""

    ts: float
    agent: str
    workflow: str
    micros: int


class RunFinished(NamedTuple):
    ts: float
    agent: str
    workflow: str
    outcome: str
    agent_version: str = ""
    """For the canary; a fact from before it existed (4 fields on the wire) has none."""


class PolicyDecision(NamedTuple):
    ts: float
    agent: str
    workflow: str
    decision: str


class ApprovalResolved(NamedTuple):
    ts: float
    agent: str
    workflow: str
    latency_ms: float


class Override(NamedTuple):
    ts: float
    agent: str
    workflow: str


class Rollback(NamedTuple):
    ts: float
    agent: str
    workflow: str


RunFact = (ToolCall | Spend | RunFinished | PolicyDecision | ApprovalResolved | Override
           | Rollback)
"""Facts about a run's work and outcome, counted in unit-economics windows by workflow."""

Fact = ToolResult | RunFact
"""Every kind of fact; all carry ``ts`` (event time, epoch seconds) and ``agent`` first."""

_TAGS: dict[type, str] = {ToolResult: "r", ToolCall: "t", Spend: "c", RunFinished: "f",
                          PolicyDecision: "p", ApprovalResolved: "a", Override: "o",
                          Rollback: "b"}
_KINDS: dict[str, Any] = {tag: kind for kind, tag in _TAGS.items()}


def to_wire(fact: Fact) -> list[Any]:
    return [_TAGS[type(fact)], *fact]


def from_wire(row: list[Any]) -> Fact:
    """One fact from its JSON array; raises ``KeyError``/``TypeError`` on a malformed one."""
    fact: Fact = _KINDS[row[0]](*row[1:])
    return fact
