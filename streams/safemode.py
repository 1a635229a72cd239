"""Safe mode for one agent under one policy rule, with hysteresis.

normal ─(error rate > when.tool_error_rate_gt over the window, ≥ min_calls)→ degraded
degraded ─(error rate ≤ exit_below over the window AND held ≥ min_hold_s)→ normal

Two thresholds and a minimum hold keep an agent from flapping between modes while a
tool is half-recovered. Manual overrides are not decided here: they are their own control
records, and :class:`producers.guard.SafeModeGuard` gives them precedence.
"""

from __future__ import annotations

from typing import Any

from schemas.signals import HALTED, NORMAL, READ_ONLY
from streams.breaker import Transition
from streams.policy import SafeModeRule
from streams.windows import WindowTotals

DEGRADED_STATE = {"degrade_to_read_only": READ_ONLY, "halt": HALTED}


class SafeMode:
    def __init__(self, rule: SafeModeRule):
        self.rule = rule
        self.state = NORMAL
        self.version = 0
        self.since = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "version": self.version, "since": self.since}

    def restore(self, snap: dict[str, Any]) -> None:
        self.state = snap["state"]
        self.version = int(snap["version"])
        self.since = float(snap["since"])

    def _move(self, state: str, now: float, reason: str, totals: WindowTotals) -> Transition:
        previous, self.state = self.state, state
        self.version += 1
        self.since = now
        return Transition(previous, state, self.version, now, reason, totals.failed_ids,
                          (("calls", totals.calls), ("error_rate", round(totals.failure_rate, 4)),
                           ("errors", totals.failures)))

    def evaluate(self, now: float, totals: WindowTotals) -> Transition | None:
        """Decide on the window ending at event time ``now``."""
        rule = self.rule
        rate = totals.failure_rate
        if self.state == NORMAL:
            if totals.calls >= rule.when.min_calls and rate > rule.when.tool_error_rate_gt:
                return self._move(
                    DEGRADED_STATE[rule.action], now,
                    f"{rule.name}: tool error rate {rate:.1%} > "
                    f"{rule.when.tool_error_rate_gt:.1%} over {totals.calls} calls", totals)
            return None
        held = now - self.since
        if held >= rule.min_hold_s and rate <= rule.exit_threshold:
            return self._move(
                NORMAL, now,
                f"{rule.name}: tool error rate {rate:.1%} ≤ {rule.exit_threshold:.1%} after "
                f"{held:.0f}s in {self.state}", totals)
        return None
