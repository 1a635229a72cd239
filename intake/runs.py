"""Spans → runs: group by trace, decide when a run is complete, chain its events.

A trace is one run (``run_id`` = the OTel trace id, which stays the events' ``trace_id``).
Its spans may arrive in any order over many requests or Kafka messages, so a run is
*closed* — its events built, sequenced, hash-chained and handed out — when either

- its root span (no parent) has arrived and ``grace_s`` passed with no new span of the
  trace (exporters send a parent after its children: the root usually comes last, the
  grace catches stragglers sent in a later batch), or
- ``idle_s`` passed with no new span and no root (the root lives in a service that does
  not export to us).

Which span is *the run*: the earliest-starting agent span (GenAI ``invoke_agent``,
OpenInference ``AGENT``, Traceloop ``workflow``/``agent``), else the root span, else the
earliest span whose parent is not in the trace. Its events are ``run.started`` and
``run.finished``; the rest contribute their own events in span start-time order, which
assigns ``seq``. A trace none of whose spans follows a known convention is not a run.

Redelivery is idempotent: event ids are derived from (trace id, span id, kind) and event
times from span times, so rebuilding a run from the same spans gives byte-identical
events, which the sink's ``event_id`` dedup hides. A span of a run closed earlier is a
duplicate (same span id: dropped silently) or late (new span id: refused with reason
``late_span``, as the chain cannot be reopened).

No span stops the assembler: a span whose mapping raises anything is refused alone
(``unmappable``), and a run whose building raises anything is handed out with no events
and every span of it refused (``run_unbuildable``), counted in :attr:`Assembler.
failed_runs`; the next run is built as usual. Every span added thus ends in exactly one
of: a built run, a refusal with a reason, a duplicate, our own SDK's scope (skipped), or
a trace that follows no convention (not a run).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from agentledger.core.ids import format_ts
from agentledger.core.pricing import DEFAULT_PRICES, PriceTable
from agentledger.core.redaction import Redactor
from agentledger.intake.catalogue import ToolCatalogue
from agentledger.intake.mapping import (
    DEFAULT_REDACTOR,
    Mapped,
    MappingError,
    claimed_agent,
    classify,
    identity,
    map_span,
    name,
    run_started,
)
from agentledger.intake.spans import OWN_SCOPE, STATUS_ERROR, SpanRecord
from agentledger.schemas.integrity import CANON_JCS, GENESIS, event_hash

CLOSED_MEMORY: Final = 100_000
MAX_OPEN_TRACES: Final = 200_000
RUN_KINDS: Final = ("agent",)


@dataclass(frozen=True, slots=True)
class Rejected:
    span: SpanRecord
    reason: str
    message: str


@dataclass(slots=True)
class Intake:
    """What :meth:`Assembler.add` did with a batch of spans."""

    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunSpend:
    """An open run's spend so far, from the spans received, and the budget they declare."""

    cost_usd: float
    tool_calls: int
    max_cost_usd: float | None
    max_tool_calls: int | None

    def over(self) -> str | None:
        """Why the run is over its budget (as the control loop words it); None if within."""
        if self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd:
            return (f"cost {self.cost_usd:.6f} USD > max_cost_usd {self.max_cost_usd:g} "
                    "(spans received so far)")
        if self.max_tool_calls is not None and self.tool_calls > self.max_tool_calls:
            return (f"tool calls {self.tool_calls} > max_tool_calls {self.max_tool_calls} "
                    "(spans received so far)")
        return None


@dataclass(slots=True)
class _Trace:
    tenant: str
    trace_id: str
    spans: dict[str, Mapped] = field(default_factory=dict)
    has_root: bool = False
    last_seen: float = 0.0
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)
    agents: frozenset[str] | None = None
    """The agents its senders' keys are bound to (None: any): the run must be one."""


@dataclass(frozen=True, slots=True)
class ClosedRun:
    tenant: str
    trace_id: str
    events: list[dict[str, Any]]
    positions: dict[int, tuple[int, int]]
    """Kafka partition → (first, last) offset holding this run's spans (Kafka intake)."""
    spans: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    """Every span of the run, when building it failed (``run_unbuildable``); else empty."""


def event_id(trace_id: str, span_id: str, kind: str, ts_ns: int) -> str:
    """A UUIDv7-shaped id that is a function of the span: same span, same id."""
    ms = ts_ns // 1_000_000
    rand = int.from_bytes(hashlib.sha256(f"{trace_id}:{span_id}:{kind}".encode()).digest()[:10],
                          "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _ts(ns: int) -> str:
    seconds, rest = divmod(ns, 10**9)
    return format_ts(datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000))


def choose_run(spans: list[Mapped]) -> Mapped:
    """The span that stands for the run (``spans`` sorted by start time)."""
    for m in spans:
        if m.kind in RUN_KINDS:
            return m
    for m in spans:
        if m.span.parent_span_id is None:
            return m
    ids = {m.span.span_id for m in spans}
    return next((m for m in spans if m.span.parent_span_id not in ids), spans[0])


def build_run(tenant: str, spans: Iterable[Mapped], origin: str,
              redactor: Redactor = DEFAULT_REDACTOR) -> list[dict[str, Any]]:
    """The run's events, sequenced by span start time and hash-chained (RFC 8785 form).

    May raise on a value the canonical form cannot hold; :meth:`Assembler.iter_due`
    refuses that run's spans rather than let it out."""
    ordered = sorted(spans, key=lambda m: (m.span.start_ns, m.span.span_id))
    run = choose_run(ordered)
    rs = run.span
    who = identity(rs, tenant)
    started = run_started(rs)
    budget = run.budget or next((m.budget for m in ordered if m.budget), None)
    if budget is not None:  # the control loop folds it as an SDK run's (streams/fold.py)
        started["budget"] = budget
    items: list[tuple[str, int, dict[str, Any], SpanRecord]] = [
        ("run.started", rs.start_ns, started, rs)]
    totals: dict[str, Any] = {"cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0,
                              "model_calls": 0, "tool_calls": 0}
    by_model: dict[str, float] = {}
    for m in ordered:  # the run span's own events too (a lone model span is a run)
        items += [(etype, ts, body, m.span) for etype, ts, body in m.events]
        if m.kind == "model":  # tokens on model spans only, never an agent's roll-up
            totals["model_calls"] += 1
            totals["tokens_in"] += m.tokens_in
            totals["tokens_out"] += m.tokens_out
            totals["cost_usd"] += m.cost_usd
            key = name(m.model_key, "unknown")
            by_model[key] = by_model.get(key, 0.0) + m.cost_usd
        elif m.kind == "tool":
            totals["tool_calls"] += 1
    failed = rs.status_code == STATUS_ERROR
    error = (rs.status_message or rs.attr("error.type") or rs.exception_type or "error") \
        if failed else None
    totals.update(cost_usd=round(totals["cost_usd"], 10),
                  duration_ms=round((rs.end_ns - rs.start_ns) / 1e6, 3),
                  cost_by_model={k: round(v, 10) for k, v in by_model.items()})
    items.append(("run.finished", rs.end_ns, {
        "outcome": "failure" if failed else "success", "workflow": started["workflow"],
        "error": redactor.redact(str(error)[:4096]) if error else None, "totals": totals}, rs))
    events = []
    prev = GENESIS
    for seq, (etype, ts_ns, body, span) in enumerate(items):
        event: dict[str, Any] = {
            "schema_version": 1, "event_id": event_id(span.trace_id, span.span_id, etype, ts_ns),
            "event_type": etype, "ts": _ts(ts_ns), "trace_id": span.trace_id,
            "span_id": span.span_id, "parent_span_id": span.parent_span_id,
            "run_id": span.trace_id, "seq": seq, **who, "prev_hash": prev, "body": body,
            "canon": CANON_JCS, "origin": origin}
        prev = event["hash"] = event_hash(event, prev)
        event["sig"] = None
        events.append(event)
    return events


class Assembler:
    """Collects spans per (tenant, trace) and hands out runs once they are complete.

    Thread-safe: the HTTP intake adds from request threads while a closer thread calls
    :meth:`due`.
    """

    def __init__(self, *, origin: str, catalogue: ToolCatalogue | None = None,
                 prices: PriceTable = DEFAULT_PRICES, grace_s: float = 2.0,
                 idle_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 redactor: Redactor = DEFAULT_REDACTOR):
        self.origin = origin
        self.redactor = redactor
        """Applied to tool arguments and run errors: the intakes pass the SDK's settings."""
        self.catalogue = catalogue or ToolCatalogue()
        self.prices = prices
        self.grace_s = grace_s
        self.idle_s = idle_s
        self.clock = clock
        self._open: dict[tuple[str, str], _Trace] = {}
        self._closed: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()
        self.ignored_traces = 0
        self.closed_runs = 0
        self.failed_runs = 0
        """Runs whose building raised: their spans were refused, the closer went on."""
        self.last_failure: str | None = None
        self.open_spans = 0
        """Spans waiting in open traces: what an intake bounds (back-pressure)."""

    def add(self, spans: Iterable[SpanRecord], tenant: str,
            position: tuple[int, int] | None = None, *,
            agents: frozenset[str] | None = None) -> Intake:
        """Take a batch of spans for ``tenant``; bad, late and own spans are reported.

        ``agents``: the agents the sender's key is bound to (None: any), so a key bound to
        agent A cannot record as agent B: a span that could name its run's agent (an agent
        span or a root) naming another is refused now (``agent_not_bound``), and a run
        built from the rest that still names another is refused whole when it closes."""
        result = Intake()
        mapped: list[Mapped] = []
        for span in spans:
            if span.scope == OWN_SCOPE:
                result.skipped += 1
                continue
            if agents is not None and (span.parent_span_id is None
                                       or classify(span) in RUN_KINDS) \
                    and (claimed := claimed_agent(span)) not in agents:
                result.rejected.append(Rejected(span, "agent_not_bound", (
                    f"the key is bound to agent(s) {', '.join(sorted(agents))}; this span "
                    f"records as agent {claimed!r}")))
                continue
            try:
                mapped.append(map_span(span, tenant, self.catalogue, self.prices,
                                       self.redactor))
            except MappingError as exc:
                result.rejected.append(Rejected(span, exc.reason, str(exc)))
            except Exception as exc:  # a bug or an unforeseen value: this span, not the batch
                result.rejected.append(Rejected(span, "unmappable",
                                                f"{type(exc).__name__}: {str(exc)[:1000]}"))
        now = self.clock()
        with self._lock:
            for m in mapped:
                key = (tenant, m.span.trace_id)
                closed = self._closed.get(key)
                if closed is not None:
                    if m.span.span_id in closed:
                        result.duplicates += 1
                    else:
                        result.rejected.append(Rejected(
                            m.span, "late_span", "the span arrived after its run was closed "
                            f"(root seen and {self.grace_s}s without new spans)"))
                    continue
                trace = self._open.get(key)
                if trace is None:
                    trace = self._open[key] = _Trace(tenant, m.span.trace_id)
                if agents is not None:
                    trace.agents = agents if trace.agents is None else trace.agents & agents
                if m.span.span_id in trace.spans:
                    result.duplicates += 1
                else:
                    result.accepted += 1
                    self.open_spans += 1
                trace.spans[m.span.span_id] = m
                trace.has_root |= m.span.parent_span_id is None
                trace.last_seen = now
                if position is not None:
                    part, offset = position
                    first, _last = trace.positions.get(part, (offset, offset))
                    trace.positions[part] = (min(first, offset), offset)
        return result

    def spend(self, tenant: str, trace_id: str) -> RunSpend | None:
        """The spend of ``tenant``'s open run ``trace_id`` so far (None if not open here):
        what lets the HTTP gate hold an OTel-fed run to its budget before it closes."""
        with self._lock:
            trace = self._open.get((tenant, trace_id))
            if trace is None:
                return None
            spans = list(trace.spans.values())
        budget = next((m.budget for m in spans if m.budget), None) or {}
        return RunSpend(round(sum(m.cost_usd for m in spans if m.kind == "model"), 10),
                        sum(m.kind == "tool" for m in spans), budget.get("max_cost_usd"),
                        budget.get("max_tool_calls"))

    def due(self, *, force: bool = False) -> list[ClosedRun]:
        """Close every complete trace (all of them with ``force``) and build its run."""
        return list(self.iter_due(force=force))

    def iter_due(self, *, force: bool = False) -> Iterator[ClosedRun]:
        """:meth:`due`, building each run only when asked for, so a caller can publish one
        run while the next is built (the sink starts sooner)."""
        now = self.clock()
        ready: list[_Trace] = []
        with self._lock:
            overflow = len(self._open) - MAX_OPEN_TRACES
            for key, trace in list(self._open.items()):
                quiet = now - trace.last_seen
                if force or overflow > 0 or quiet >= (self.grace_s if trace.has_root
                                                      else self.idle_s):
                    overflow -= 1
                    ready.append(self._open.pop(key))
                    self.open_spans -= len(trace.spans)
                    self._closed[key] = frozenset(trace.spans)
            while len(self._closed) > CLOSED_MEMORY:
                self._closed.popitem(last=False)
        for trace in ready:
            rejected: list[Rejected] = []
            events: list[dict[str, Any]] = []
            if all(m.kind == "other" for m in trace.spans.values()):
                self.ignored_traces += 1
            else:
                try:
                    events = build_run(trace.tenant, trace.spans.values(), self.origin,
                                       self.redactor)
                    if trace.agents is not None and events[0]["agent"] not in trace.agents:
                        rejected = [Rejected(m.span, "agent_not_bound", (
                            f"the run records as agent {events[0]['agent']!r}; the key that "
                            f"sent it is bound to {', '.join(sorted(trace.agents))}"))
                            for m in trace.spans.values()]
                        events = []
                    self.closed_runs += 1
                except Exception as exc:  # this run only: the next one is built as usual
                    message = (f"the run could not be built, so none of its spans landed: "
                               f"{type(exc).__name__}: {str(exc)[:1000]}")
                    rejected = [Rejected(m.span, "run_unbuildable", message)
                                for m in trace.spans.values()]
                    self.failed_runs += 1
                    self.last_failure = message
            yield ClosedRun(trace.tenant, trace.trace_id, events, trace.positions,
                            len(trace.spans), rejected)

    def discard_partitions(self, partitions: set[int]) -> int:
        """Forget open traces with spans from ``partitions`` (revoked from this consumer:
        their new owner rebuilds them whole from its committed offsets)."""
        with self._lock:
            gone = [key for key, trace in self._open.items()
                    if partitions.intersection(trace.positions)]
            for key in gone:
                self.open_spans -= len(self._open.pop(key).spans)
        return len(gone)

    def open_first_offsets(self) -> dict[int, int]:
        """Kafka partition → the first offset holding a span of a still-open trace."""
        firsts: dict[int, int] = {}
        with self._lock:
            for trace in self._open.values():
                for part, (first, _last) in trace.positions.items():
                    firsts[part] = min(first, firsts.get(part, first))
        return firsts

    @property
    def open_traces(self) -> int:
        return len(self._open)
