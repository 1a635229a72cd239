"""Stage two of the control loop: decide per tenant.

Reads the facts stage one routed by tenant and keeps, for each tenant: one breaker per
tool, safe mode per (agent, rule), tool health and unit-economics windows. It returns what
to publish; the faust layer publishes it and persists the state this returns in
``state`` — only when a breaker or safe mode actually changed, never per event.

Time: every agent is its own event-time clock (:mod:`agentledger.streams.clocks`). Its windows, its
safe-mode hold and its share of a breaker are read on that clock, so one producer's clock
(skewed, replaying, lagging) never moves anyone else's decisions. The pure code here is
shared by the worker, ``bench/bench_decisions.py`` and ``agentledger control backtest``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentledger.schemas.signals import (
    OPEN,
    ControlSignal,
    MetricWindow,
    agent_scope,
    breaker_scope,
    control_key,
)
from agentledger.streams.breaker import Breaker, Transition
from agentledger.streams.callers import ToolCallers
from agentledger.streams.canary import Canaries
from agentledger.streams.clocks import SourceClocks
from agentledger.streams.control_policy import Policy
from agentledger.streams.economics import Economics
from agentledger.streams.facts import (
    ApprovalResolved,
    Fact,
    Override,
    PolicyDecision,
    Rollback,
    RunFact,
    RunFinished,
    Spend,
    ToolCall,
    ToolResult,
)
from agentledger.streams.health import ToolHealth
from agentledger.streams.safemode import DEGRADED_STATE, SafeMode
from agentledger.streams.windows import CountWindow

BREAKERS = "breakers"
SAFE_MODES = "safe_modes"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class Decisions:
    signals: list[ControlSignal] = field(default_factory=list)
    metrics: list[MetricWindow] = field(default_factory=list)
    state: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    """(table, tenant, key, snapshot) to persist."""

    def extend(self, other: Decisions) -> None:
        self.signals += other.signals
        self.metrics += other.metrics
        self.state += other.state


class Controller:
    def __init__(self, policy: Policy, *, tool_health: bool = True):
        """``tool_health=False`` skips the tool-health metrics (backtests and benches
        decide, they publish nothing)."""
        self.policy = policy
        self.tool_health = tool_health
        w = policy.windows
        self.window_s, self.hop_s = w.window_s, w.hop_s
        self.keep_s = policy.keep_s
        self.clocks = SourceClocks(w.allowed_lateness_s, w.window_s, w.rejoin_after_events,
                                   w.rejoin_after_s)
        self.now = 0.0
        """Largest raw event time seen: only for unit-economics windows (not decisions)."""
        self.recent_time = 0.0
        """Largest raw event time of the input since :meth:`take_recent_time`."""
        self.breakers: dict[tuple[str, str], Breaker] = {}
        self.open_breakers: set[tuple[str, str]] = set()
        self.safe_modes: dict[tuple[str, str, str], SafeMode] = {}
        self.agent_windows: dict[tuple[str, str], dict[str, CountWindow]] = {}
        """(tenant, agent) -> {"": all its results, tool: that tool's results}."""
        self.callers = ToolCallers(self.clocks, self.agent_windows)
        self.degraded: set[tuple[str, str, str]] = set()
        self._failing: set[str] = set()
        """Agents with an on-time failure in the record being applied."""
        self.health = ToolHealth(self.window_s, self.hop_s)
        self.economics = Economics(policy.economics.window_s)
        c = policy.canary
        self.canaries = Canaries(alpha=c.alpha, mixture_sd=c.mixture_sd, margin=c.margin,
                                 min_runs=c.min_runs, state=DEGRADED_STATE[c.action]) \
            if c.enabled else None

    # -- durable state -------------------------------------------------------------------

    def restore(self, table: str, items: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Load persisted breakers / safe modes (after a restart). Returns how many."""
        n = 0
        for _, snap in items:
            snap = dict(snap)
            if table == BREAKERS:
                b = self._breaker(snap["tenant"], snap["tool"])
                b.restore(snap)
                if b.state == OPEN:
                    self.open_breakers.add((snap["tenant"], snap["tool"]))
            elif snap.get("canary"):
                if self.canaries is not None:
                    self.canaries.restore(snap["tenant"], snap["agent"], snap["version"],
                                          snap)
            else:
                rule = next((r for r in self.policy.safe_mode if r.name == snap["rule"]), None)
                if rule is None:  # rule removed from the policy since: forget it
                    continue
                key = (snap["tenant"], snap["agent"], rule.name)
                self._safe_mode(*key).restore(snap)
                if self.safe_modes[key].state != "normal":
                    self.degraded.add(key)
            n += 1
        return n

    def forget(self, tenants: set[str]) -> None:
        """Drop every scope of ``tenants``: another worker decides them now (their facts
        partition moved on a rebalance). Kept, an OPEN breaker here would half-open on
        this worker's clock too, and its transition would be announced twice."""
        for key in [k for k in self.breakers if k[0] in tenants]:
            del self.breakers[key]
        for mode in [k for k in self.safe_modes if k[0] in tenants]:
            del self.safe_modes[mode]
        for agent in [k for k in self.agent_windows if k[0] in tenants]:
            del self.agent_windows[agent]
        self.callers.forget(tenants)
        if self.canaries is not None:
            self.canaries.forget(tenants)
        self.open_breakers = {k for k in self.open_breakers if k[0] not in tenants}
        self.degraded = {k for k in self.degraded if k[0] not in tenants}

    def _breaker(self, tenant: str, tool: str) -> Breaker:
        b = self.breakers.get((tenant, tool))
        if b is None:
            b = self.breakers[(tenant, tool)] = Breaker(self.policy.breaker, self.window_s,
                                                       self.hop_s, self.keep_s)
        return b

    def _safe_mode(self, tenant: str, agent: str, rule_name: str) -> SafeMode:
        s = self.safe_modes.get((tenant, agent, rule_name))
        if s is None:
            rule = next(r for r in self.policy.safe_mode if r.name == rule_name)
            s = self.safe_modes[(tenant, agent, rule_name)] = SafeMode(rule, self.window_s)
        return s

    def _offset(self, tenant: str, agent: str) -> float:
        s = self.clocks.sources.get((tenant, agent))
        return s.offset if s is not None else 0.0

    # -- transitions to signals ----------------------------------------------------------

    def _breaker_moved(self, out: Decisions, tenant: str, tool: str, t: Transition) -> None:
        scope = breaker_scope(tenant, tool)
        b = self.breakers[(tenant, tool)]
        if b.state == OPEN:
            self.open_breakers.add((tenant, tool))
        else:
            self.open_breakers.discard((tenant, tool))
        out.signals.append(self._signal("breaker", scope, "", t))
        snap = b.snapshot(lambda a: self._offset(tenant, a)) | {"tenant": tenant, "tool": tool}
        out.state.append((BREAKERS, tenant, control_key("breaker", scope), snap))

    def _safe_mode_moved(self, out: Decisions, tenant: str, agent: str, rule: str,
                         t: Transition) -> None:
        scope = agent_scope(tenant, agent)
        key = (tenant, agent, rule)
        mode = self.safe_modes[key]
        if mode.state == "normal":
            self.degraded.discard(key)
        else:
            self.degraded.add(key)
        out.signals.append(self._signal("safe_mode", scope, rule, t))
        snap = mode.snapshot(self._offset(tenant, agent)) | {
            "tenant": tenant, "agent": agent, "rule": rule}
        out.state.append((SAFE_MODES, tenant, control_key("safe_mode", scope, rule), snap))

    def _canary(self, out: Decisions, tenant: str, fact: RunFinished, ts: float) -> None:
        """The canary's look after one finished run (:mod:`agentledger.streams.canary`)."""
        assert self.canaries is not None
        moved, records = self.canaries.look(tenant, fact.agent, fact.agent_version,
                                            fact.outcome == "success", ts)
        out.state += [(SAFE_MODES, tenant, key, snap) for key, snap in records]
        if moved is not None:
            out.signals.append(self._signal("safe_mode", moved[0], "canary", moved[1]))

    def _signal(self, kind: str, scope: str, rule: str, t: Transition) -> ControlSignal:
        details = dict(t.details) | {"policy_version": self.policy.version,
                                     "decided_at": t.ts}
        return ControlSignal(kind=kind, scope=scope, rule=rule, state=t.state,
                             previous_state=t.previous, version=t.version, ts=_utc(t.ts),
                             reason=t.reason, policy_version=self.policy.version,
                             triggered_by=list(t.triggered_by), details=details)

    # -- input ---------------------------------------------------------------------------

    def apply(self, tenant: str, facts: Iterable[Fact], arrival: float = 0.0) -> Decisions:
        """Fold one tenant's facts (one input record, in order), deciding on each agent's
        windows once the record is in. ``arrival`` is the wall time it arrived (for the
        idle advance of silent agents; 0 = unknown)."""
        out = Decisions()
        self.clocks.next_record()
        self.callers.next_record(arrival)
        touched: dict[str, list[float]] = {}
        for fact in facts:
            ts, agent = float(fact.ts), fact.agent
            if ts > self.now:
                self.now = ts
            if ts > self.recent_time:
                self.recent_time = ts
            if isinstance(fact, ToolResult):
                late_failures = touched.get(agent)
                if late_failures is None:
                    late_failures = touched[agent] = []
                self._result(out, tenant, agent, fact, ts, arrival, late_failures)
            else:
                self._economics(tenant, agent, fact, ts)
                if isinstance(fact, RunFinished) and self.canaries is not None:
                    self._canary(out, tenant, fact, ts)
        failing, self._failing = self._failing, set()
        for agent, late_failures in touched.items():
            self._agent_moved(out, tenant, agent, late_failures, agent in failing)
        return out

    def _result(self, out: Decisions, tenant: str, agent: str, fact: ToolResult, ts: float,
                arrival: float, late_failures: list[float]) -> None:
        tool, status, latency, event_id = fact.tool, fact.status, fact.latency_ms, fact.event_id
        if status == "rejected":  # refused before it ran: says nothing about the tool
            return
        failed = status in ("error", "timeout")
        at, _ = self.clocks.place(tenant, agent, ts, arrival)
        source = self.clocks.sources[(tenant, agent)]
        windows = self.agent_windows.get((tenant, agent))
        if windows is None:
            windows = self.agent_windows[(tenant, agent)] = {
                "": CountWindow(self.hop_s, self.keep_s)}
        windows[""].add(at, failed, event_id)
        per_tool = windows.get(tool)
        if per_tool is None:
            per_tool = windows[tool] = CountWindow(self.hop_s, self.keep_s)
            self.callers.add(tenant, tool, agent)
        per_tool.add(at, failed, event_id)
        late = at < source.clock - self.hop_s
        if failed:
            if late:
                late_failures.append(at)
            else:
                self._failing.add(agent)
        if self.tool_health:
            self.health.add(tenant, agent, tool, at, failed=failed,
                            timeout=status == "timeout", latency_ms=float(latency))
        clocks = self.clocks

        def clock(a: str) -> float:
            return clocks.clock(tenant, a) or at

        t = self._breaker(tenant, tool).record(at, failed=failed, agent=agent,
                                               event_id=event_id, clock=clock,
                                               offset=source.offset, late=late)
        if t is not None:
            self._breaker_moved(out, tenant, tool, t)

    def _agent_moved(self, out: Decisions, tenant: str, agent: str,
                     late_failures: list[float], failing: bool = False) -> None:
        """The agent's clock (may have) moved: its safe modes, open breakers it calls.
        Entering is judged when a failure arrives (``failing``): that is when evidence
        grows (a window that only loses calls is judged again at the next failure), and
        it keeps the hot path to ok results a dict update. Leaving is judged whenever the
        clock moves."""
        source = self.clocks.sources.get((tenant, agent))
        window = self.agent_windows.get((tenant, agent))
        if source is None or window is None:
            return
        now, offset = source.clock, source.offset

        def tenant_totals(tool: str, at: float, seconds: int) -> tuple[int, int]:
            return self.callers.totals(tenant, tool, agent, at, seconds)

        for rule in self.policy.safe_mode:
            mode = self._safe_mode(tenant, agent, rule.name)
            t = (mode.enter_if(now, offset, window, tenant=tenant_totals) if failing
                 else None) or \
                mode.exit_if(now, offset, window, tenant_totals)
            seen: set[int] = set()
            for at in late_failures:  # a late failure is judged on the window it belongs to
                if t is not None:
                    break
                bucket = int(at // self.hop_s)
                if bucket not in seen:
                    seen.add(bucket)
                    t = mode.enter_if(at, offset, window, now, tenant_totals)
            if t is not None:
                self._safe_mode_moved(out, tenant, agent, rule.name, t)
        for key in [k for k in self.open_breakers if k[0] == tenant]:
            t = self.breakers[key].advance(now, agent, offset)
            if t is not None:
                self._breaker_moved(out, tenant, key[1], t)
        if self.tool_health:
            out.metrics += self.health.close(tenant, agent, now, offset)

    def _economics(self, tenant: str, agent: str, fact: RunFact, ts: float) -> None:
        w = self.economics.window(tenant, agent, fact.workflow, ts)
        if isinstance(fact, Spend):
            w.add("spend_micros", int(fact.micros))
        elif isinstance(fact, ToolCall):
            w.add("tool_calls")
        elif isinstance(fact, RunFinished):
            w.finished(fact.outcome)
        elif isinstance(fact, PolicyDecision):
            w.add("policy_decisions")
            if fact.decision == "deny":
                w.add("policy_denies")
            elif fact.decision == "escalate":
                w.add("escalations")
        elif isinstance(fact, ApprovalResolved):
            w.add("approvals")
            w.add("approval_latency_ms", round(float(fact.latency_ms)))
        elif isinstance(fact, Override):
            w.add("overrides")
        elif isinstance(fact, Rollback):
            w.add("rollbacks")

    # -- time ----------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> Decisions:
        """Time-driven decisions on every agent's current clock: OPEN breakers whose wait
        is over, safe modes whose hold is over and whose window has cooled, and closed
        economics windows. ``now`` (raw) first moves every agent's clock to at least it
        (tests and backtests use this to play time forward)."""
        out = Decisions()
        self.callers.next_record()
        if now is not None:
            self.clocks.push_all(now)
            self.now = max(self.now, now)
        agents = {(t, a) for (t, a, _) in self.degraded}
        for tenant, tool in self.open_breakers:
            agents |= {(tenant, a) for a in self.breakers[(tenant, tool)].marks}
        if now is not None:
            agents |= {(t, a) for (t, _tool) in self.open_breakers
                       for (t2, a) in self.clocks.sources if t2 == t}
        for tenant, agent in sorted(agents):
            self._agent_moved(out, tenant, agent, [])
        out.metrics += self.economics.close_until(self.now)
        return out

    def idle(self, wall: float, idle_s: float) -> Decisions:
        """Agents silent for more than ``idle_s`` of wall time: their clocks run on with
        the wall clock (so open breakers half-open and holds end), then decide."""
        self.clocks.idle(wall, idle_s)
        self.callers.next_record()
        out = Decisions()
        for tenant, agent in sorted(self.clocks.sources):
            self._agent_moved(out, tenant, agent, [])
        return out

    def take_recent_time(self) -> float:
        """Largest raw event time of the input since the last call (progress beats)."""
        t, self.recent_time = self.recent_time, 0.0
        return t

    def publish_open_windows(self) -> list[MetricWindow]:
        return self.economics.publish_open()

    def counts(self) -> dict[str, int]:
        """Scopes not in their resting state, and time accounting (for heartbeats)."""
        return {"breakers_open": sum(b.state == "OPEN" for b in self.breakers.values()),
                "breakers_half_open": sum(b.state == "HALF_OPEN"
                                          for b in self.breakers.values()),
                "safe_modes_active": sum(s.state != "normal"
                                         for s in self.safe_modes.values()),
                "late_events": self.clocks.late_events,
                "clock_rejoins": self.clocks.rejoins}

    def snapshot_state(self) -> dict[str, Any]:
        """Current state of every scope this worker decides (for logs and tests)."""
        return {
            "breakers": {breaker_scope(t, tool): b.state for (t, tool), b in
                         self.breakers.items()},
            "safe_modes": {f"{agent_scope(t, a)}:{r}": s.state for (t, a, r), s in
                           self.safe_modes.items()},
            "event_time": self.now,
        }
