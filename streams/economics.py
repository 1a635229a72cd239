"""Unit economics per (tenant, agent, workflow) over tumbling event-time windows.

Cost per successful task = all spend in the window (failed, aborted and rolled-back runs
included) ÷ successful runs finished in the window. Spend is attributed to the window of
the ``model.call`` that incurred it and success to the window of ``run.finished``, so
summing windows gives exactly the ledger's totals. Money is integer micro-dollars.

A window is published as final when event time passes its end, but kept for ``keep_s``
more: facts from a partition that lags behind (events are ordered per run, not across
runs) still land in it and it is re-published, so a late fact corrects the window
instead of starting a second, smaller one that would replace it downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from agentledger.schemas.signals import MetricWindow

COUNTERS = ("runs", "successes", "failures", "aborted", "rolled_back", "spend_micros",
            "tool_calls", "policy_decisions", "policy_denies", "escalations", "approvals",
            "approval_latency_ms", "overrides", "rollbacks")

_OUTCOME_COUNTER = {"success": "successes", "failure": "failures", "aborted": "aborted",
                    "rolled_back": "rolled_back"}


@dataclass(slots=True)
class EconomicsWindow:
    tenant: str
    agent: str
    workflow: str
    start: float
    end: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    revision: int = 0
    dirty: bool = False
    final: bool = False

    def add(self, counter: str, amount: int = 1) -> None:
        self.counts[counter] += amount
        self.dirty = True

    def finished(self, outcome: str) -> None:
        self.add("runs")
        if outcome in _OUTCOME_COUNTER:
            self.add(_OUTCOME_COUNTER[outcome])

    def values(self) -> dict[str, float]:
        c = self.counts
        runs = c["runs"]
        values: dict[str, float] = {k: float(v) for k, v in c.items()}
        values["spend_usd"] = c["spend_micros"] / 1e6
        if c["successes"]:
            values["cost_per_success_usd"] = c["spend_micros"] / c["successes"] / 1e6
        if runs:
            values["success_rate"] = c["successes"] / runs
            values["rollback_rate"] = c["rollbacks"] / runs
            values["override_rate"] = c["overrides"] / runs
        if c["policy_decisions"]:
            values["policy_block_rate"] = c["policy_denies"] / c["policy_decisions"]
            values["escalation_rate"] = c["escalations"] / c["policy_decisions"]
        if c["approvals"]:
            values["approval_latency_avg_ms"] = c["approval_latency_ms"] / c["approvals"]
        return values

    def publish(self, final: bool) -> MetricWindow:
        self.revision += 1
        self.dirty = False
        self.final = self.final or final
        return MetricWindow(
            kind="unit_economics", tenant=self.tenant, agent=self.agent, subject=self.workflow,
            window_start=datetime.fromtimestamp(self.start, UTC),
            window_end=datetime.fromtimestamp(self.end, UTC), revision=self.revision,
            final=self.final, values=self.values())


class Economics:
    """All open windows; closes a window once event time passes its end."""

    def __init__(self, window_s: int, keep_windows: int = 10):
        self.window_s = window_s
        self.keep_s = window_s * keep_windows
        self.windows: dict[tuple[str, str, str, float], EconomicsWindow] = {}

    def window(self, tenant: str, agent: str, workflow: str, ts: float) -> EconomicsWindow:
        start = ts - ts % self.window_s
        key = (tenant, agent, workflow, start)
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = EconomicsWindow(tenant, agent, workflow, start,
                                                     start + self.window_s)
        return w

    def close_until(self, now: float) -> list[MetricWindow]:
        """Publish every window that ended by ``now`` as final (once, or again after a late
        fact changed it); forget windows older than ``keep_s``."""
        published = [w.publish(final=True) for w in
                     sorted(self.windows.values(), key=lambda w: w.start)
                     if w.end <= now and (not w.final or w.dirty)]
        for key in [k for k, w in self.windows.items() if w.end + self.keep_s <= now]:
            del self.windows[key]
        return published

    def publish_open(self) -> list[MetricWindow]:
        """Windows changed since they were last published (open ones, or late corrections)."""
        return [w.publish(final=False) for w in self.windows.values() if w.dirty]
