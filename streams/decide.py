"""Stage two of the control loop: decide per tenant.

Reads the facts stage one routed by tenant and keeps, for each tenant: tool health per
(agent, tool), one breaker per tool, safe mode per (agent, rule) and unit-economics
windows. It returns what to publish; the faust layer publishes it and persists the state
this returns in ``state`` — only when a breaker or safe mode actually changed, never per
event.

Event time is the largest event timestamp this worker has seen (optionally pushed on by
the wall clock when nothing arrives, see :meth:`Controller.advance`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.signals import (
    ControlSignal,
    MetricWindow,
    agent_scope,
    breaker_scope,
    control_key,
)
from streams.breaker import Breaker, Transition
from streams.economics import Economics
from streams.fold import Fact
from streams.policy import Policy
from streams.safemode import SafeMode
from streams.windows import HopWindow

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
    def __init__(self, policy: Policy):
        self.policy = policy
        w = policy.windows
        self.window_s, self.hop_s = w.window_s, w.hop_s
        self.now = 0.0
        self.breakers: dict[tuple[str, str], Breaker] = {}
        self.safe_modes: dict[tuple[str, str, str], SafeMode] = {}
        self.agent_health: dict[tuple[str, str], HopWindow] = {}
        self.tool_health: dict[tuple[str, str, str], HopWindow] = {}
        self.economics = Economics(policy.economics.window_s)
        self._published_hop = 0

    # -- durable state -------------------------------------------------------------------

    def restore(self, table: str, items: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Load persisted breakers / safe modes (after a restart). Returns how many."""
        n = 0
        for _, snap in items:
            snap = dict(snap)
            if table == BREAKERS:
                self._breaker(snap["tenant"], snap["tool"]).restore(snap)
            else:
                rule = next((r for r in self.policy.safe_mode if r.name == snap["rule"]), None)
                if rule is None:  # rule removed from the policy since: forget it
                    continue
                self._safe_mode(snap["tenant"], snap["agent"], rule.name).restore(snap)
            n += 1
        return n

    def _breaker(self, tenant: str, tool: str) -> Breaker:
        b = self.breakers.get((tenant, tool))
        if b is None:
            b = self.breakers[(tenant, tool)] = Breaker(self.policy.breaker, self.window_s,
                                                       self.hop_s)
        return b

    def _safe_mode(self, tenant: str, agent: str, rule_name: str) -> SafeMode:
        s = self.safe_modes.get((tenant, agent, rule_name))
        if s is None:
            rule = next(r for r in self.policy.safe_mode if r.name == rule_name)
            s = self.safe_modes[(tenant, agent, rule_name)] = SafeMode(rule)
        return s

    # -- transitions to signals ----------------------------------------------------------

    def _breaker_moved(self, out: Decisions, tenant: str, tool: str, t: Transition) -> None:
        scope = breaker_scope(tenant, tool)
        out.signals.append(self._signal("breaker", scope, "", t))
        snap = self.breakers[(tenant, tool)].snapshot() | {"tenant": tenant, "tool": tool}
        out.state.append((BREAKERS, tenant, control_key("breaker", scope), snap))

    def _safe_mode_moved(self, out: Decisions, tenant: str, agent: str, rule: str,
                         t: Transition) -> None:
        scope = agent_scope(tenant, agent)
        out.signals.append(self._signal("safe_mode", scope, rule, t))
        snap = self.safe_modes[(tenant, agent, rule)].snapshot() | {
            "tenant": tenant, "agent": agent, "rule": rule}
        out.state.append((SAFE_MODES, tenant, control_key("safe_mode", scope, rule), snap))

    def _signal(self, kind: str, scope: str, rule: str, t: Transition) -> ControlSignal:
        return ControlSignal(kind=kind, scope=scope, rule=rule, state=t.state,
                             previous_state=t.previous, version=t.version, ts=_utc(t.ts),
                             reason=t.reason, policy_version=self.policy.version,
                             triggered_by=list(t.triggered_by), details=dict(t.details))

    # -- input ---------------------------------------------------------------------------

    def apply(self, tenant: str, facts: Iterable[Fact]) -> Decisions:
        """Fold one tenant's facts (in order), deciding as each result arrives."""
        out = Decisions()
        touched_agents: set[str] = set()
        for fact in facts:
            tag, ts, agent = fact[0], float(fact[1]), fact[2]
            self.now = max(self.now, ts)
            if tag == "r":
                self._result(out, tenant, agent, fact, ts)
                touched_agents.add(agent)
            else:
                self._economics(tenant, agent, fact, ts)
        for agent in touched_agents:
            self._evaluate_safe_mode(out, tenant, agent)
        return out

    def _result(self, out: Decisions, tenant: str, agent: str, fact: Fact, ts: float) -> None:
        _, _, _, tool, status, latency, event_id, error_type = fact
        if status == "rejected":  # refused before it ran: says nothing about the tool
            return
        failed = status in ("error", "timeout")
        timeout = status == "timeout"
        for windows, key in ((self.tool_health, (tenant, agent, tool)),
                             (self.agent_health, (tenant, agent))):
            w = windows.get(key)
            if w is None:
                w = windows[key] = HopWindow(self.window_s, self.hop_s)
            w.add(ts, failed=failed, timeout=timeout, latency_ms=latency, event_id=event_id,
                  error_type=error_type)
        t = self._breaker(tenant, tool).record(ts, failed=failed, timeout=timeout,
                                               latency_ms=latency, event_id=event_id)
        if t is not None:
            self._breaker_moved(out, tenant, tool, t)

    def _evaluate_safe_mode(self, out: Decisions, tenant: str, agent: str) -> None:
        window = self.agent_health.get((tenant, agent))
        if window is None:
            return
        totals = window.totals(self.now)
        for rule in self.policy.safe_mode:
            t = self._safe_mode(tenant, agent, rule.name).evaluate(self.now, totals)
            if t is not None:
                self._safe_mode_moved(out, tenant, agent, rule.name, t)

    def _economics(self, tenant: str, agent: str, fact: Fact, ts: float) -> None:
        tag, workflow = fact[0], fact[3]
        w = self.economics.window(tenant, agent, workflow, ts)
        if tag == "c":
            w.add("spend_micros", int(fact[4]))
        elif tag == "t":
            w.add("tool_calls")
        elif tag == "f":
            w.finished(fact[4])
        elif tag == "p":
            w.add("policy_decisions")
            if fact[4] == "deny":
                w.add("policy_denies")
            elif fact[4] == "escalate":
                w.add("escalations")
        elif tag == "a":
            w.add("approvals")
            w.add("approval_latency_ms", round(float(fact[4])))
        elif tag == "o":
            w.add("overrides")
        elif tag == "b":
            w.add("rollbacks")

    # -- time ----------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> Decisions:
        """Move event time to ``now`` (never backwards) and make the time-driven
        decisions: OPEN breakers whose wait is over, safe modes whose hold is over and
        whose window has cooled, closed hops (tool health) and closed economics windows."""
        out = Decisions()
        if now is not None:
            self.now = max(self.now, now)
        now = self.now
        for (tenant, tool), breaker in self.breakers.items():
            t = breaker.advance(now)
            if t is not None:
                self._breaker_moved(out, tenant, tool, t)
        for (tenant, agent, rule), mode in self.safe_modes.items():
            if mode.state == "normal":
                continue
            window = self.agent_health.get((tenant, agent)) or HopWindow(self.window_s,
                                                                         self.hop_s)
            t = mode.evaluate(now, window.totals(now))
            if t is not None:
                self._safe_mode_moved(out, tenant, agent, rule, t)
        out.metrics += self._closed_hop_health(now)
        out.metrics += self.economics.close_until(now)
        return out

    def _closed_hop_health(self, now: float) -> list[MetricWindow]:
        """Tool health for the window ending at the last hop boundary ≤ ``now``, once."""
        boundary = int(now // self.hop_s) * self.hop_s
        if boundary <= self._published_hop:
            return []
        self._published_hop = boundary
        metrics = []
        last_closed = boundary - 1e-9
        for (tenant, agent, tool), window in list(self.tool_health.items()):
            totals = window.totals(last_closed)
            window.prune(now)
            if not window:
                del self.tool_health[(tenant, agent, tool)]
            if not totals.calls:
                continue
            values = {"calls": float(totals.calls), "errors": float(totals.failures),
                      "timeouts": float(totals.timeouts), "error_rate": totals.failure_rate,
                      "p95_latency_ms": totals.p95_latency_ms}
            metrics.append(MetricWindow(
                kind="tool_health", tenant=tenant, agent=agent, subject=tool,
                window_start=_utc(boundary - self.window_s), window_end=_utc(boundary),
                revision=1, final=True, values=values))
        for key, window in list(self.agent_health.items()):
            window.prune(now)
            if not window:
                del self.agent_health[key]
        return metrics

    def publish_open_windows(self) -> list[MetricWindow]:
        return self.economics.publish_open()

    def counts(self) -> dict[str, int]:
        """How many scopes are not in their resting state (for heartbeats)."""
        return {"breakers_open": sum(b.state == "OPEN" for b in self.breakers.values()),
                "breakers_half_open": sum(b.state == "HALF_OPEN"
                                          for b in self.breakers.values()),
                "safe_modes_active": sum(s.state != "normal"
                                         for s in self.safe_modes.values())}

    def snapshot_state(self) -> dict[str, Any]:
        """Current state of every scope this worker decides (for logs and tests)."""
        return {
            "breakers": {breaker_scope(t, tool): b.state for (t, tool), b in
                         self.breakers.items()},
            "safe_modes": {f"{agent_scope(t, a)}:{r}": s.state for (t, a, r), s in
                           self.safe_modes.items()},
            "event_time": self.now,
        }
