"""Safe mode for one agent under one policy rule: a significance test in, hysteresis out.

normal ─(failures in the window are significant evidence of an error rate above
         ``when.tool_error_rate_gt``: exact binomial test at ``when.confidence``)→ degraded
degraded ─(the window is no evidence (at ``exit_confidence``) of a rate above
           ``exit_below`` AND held ≥ min_hold_s)→ normal

The test runs on the agent's results over all its tools and on each tool's results alone
(an outage of one of three tools is diluted threefold in the agent's total); the agent
leaves only when none of them is still evidence of a rate above ``exit_below``.

With ``when.tenant_window_s`` the test also runs on a tool's results from every agent of
the tenant calling it, for an agent whose own results on the tool fail now (at
``exit_confidence``): one agent's few calls are slow evidence, its tenant's are fast. The
same tenant-wide window then also holds the agent in safe mode while it is evidence of a
rate above ``exit_below`` on a tool the agent called lately, so a small agent whose last
minute held two calls and no failure does not leave in the middle of an outage.

Why a test and not "rate > threshold over ≥ min_calls": 2 failures in 21 calls is 9.5 %,
and happens to a healthy agent with 2 % background errors about once an hour. The test
asks instead how rare this many failures would be *if the true rate were the threshold*;
with confidence 0.9999 a healthy agent (whose rate is below the threshold) trips one look
in at most 10,000, by construction, whatever its volume. See docs/control-loop.md.

Times here are the agent's own *mapped* event time (``streams/clocks.py``); transitions
carry raw time (``mapped + offset``). Manual overrides are not decided here: they are their
own control records, and :class:`agentledger.producers.guard.SafeModeGuard` gives them precedence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentledger.schemas.signals import HALTED, NORMAL, READ_ONLY
from agentledger.streams.breaker import Transition
from agentledger.streams.control_policy import SafeModeRule
from agentledger.streams.stats import critical_failures, lower_bound
from agentledger.streams.windows import CountWindow

DEGRADED_STATE = {"degrade_to_read_only": READ_ONLY, "halt": HALTED}

Windows = Mapping[str, CountWindow]
"""An agent's windows: ``""`` all its tool results, then one per tool."""


TenantTotals = Callable[[str, float, int], tuple[int, int]]
"""(tool, mapped time of this agent, seconds) -> (calls, failures) of every agent of the
tenant calling the tool, each read at its own clock (this agent at the given time)."""


def _windows(window: CountWindow | Windows) -> Windows:
    return {"": window} if isinstance(window, CountWindow) else window


class SafeMode:
    def __init__(self, rule: SafeModeRule, window_s: int):
        self.rule = rule
        self.window_s = window_s
        self.state = NORMAL
        self.version = 0
        self.since = 0.0
        """Mapped time of the last transition."""

    def snapshot(self, offset: float = 0.0) -> dict[str, Any]:
        return {"state": self.state, "version": self.version, "since": self.since + offset}

    def restore(self, snap: dict[str, Any]) -> None:
        self.state = snap["state"]
        self.version = int(snap["version"])
        self.since = float(snap["since"])

    def _move(self, state: str, now: float, offset: float, reason: str,
              ids: tuple[str, ...], details: dict[str, Any]) -> Transition:
        previous, self.state = self.state, state
        self.version += 1
        self.since = now
        return Transition(previous, state, self.version, now + offset, reason, ids,
                          tuple(sorted(details.items())))

    def entering(self, at: float, window: CountWindow,
                 tenant: Callable[[int], tuple[int, int]] | None = None
                 ) -> tuple[str, int, int, int] | None:
        """``(which window, seconds, calls, failures)`` if the rule fires on the window(s)
        ending at mapped time ``at``, else None. ``tenant`` gives the tenant-wide totals of
        this window's tool (None for the agent's total). The hot path: integer compares."""
        when = self.rule.when
        calls, failures = window.totals(at, self.window_s)
        if calls >= when.min_calls and failures >= critical_failures(
                calls, when.tool_error_rate_gt, when.alpha):
            return "short", self.window_s, calls, failures
        if tenant is not None and when.tenant_window_s:
            seconds = when.tenant_window_s
            own_calls, own_failures = window.totals(at, seconds)
            # the tenant's callers of this tool together, for an agent failing on it now:
            # a 60-calls-a-minute agent alone needs a minute or more to show 99.99 %
            # evidence of a 20 % outage, its tenant's callers together a few seconds
            if own_failures and own_failures >= critical_failures(
                    own_calls, when.tool_error_rate_gt, self.rule.exit_alpha):
                t_calls, t_failures = tenant(seconds)
                if t_calls >= when.min_calls and t_failures >= critical_failures(
                        t_calls, when.tool_error_rate_gt, when.alpha):
                    return "tenant", seconds, t_calls, t_failures
        if when.long_window_s and calls and failures >= critical_failures(
                calls, when.tool_error_rate_gt, self.rule.exit_alpha):
            # the long window needs the short one failing now too (at exit_confidence),
            # and evidence already acted on is not used twice: after leaving safe mode
            # it only counts from that moment, so an outage that has ended cannot
            # degrade the agent again on a noisy minute
            long_calls, long_failures = window.totals(at, when.long_window_s,
                                                      self.since or None)
            if long_calls >= when.min_calls and long_failures >= critical_failures(
                    long_calls, when.tool_error_rate_gt, when.alpha):
                return "long", when.long_window_s, long_calls, long_failures
        return None

    def enter_if(self, at: float, offset: float, window: CountWindow | Windows,
                 now: float | None = None, tenant: TenantTotals | None = None
                 ) -> Transition | None:
        """From normal: decide on the window ending at ``at`` (the agent's clock ``now``,
        or the time of a late failure, so a late outage is judged on the window it belongs
        to). Windows ending before the last transition were judged already: a late outage
        degrades the agent once, from ``now``, for at least ``min_hold_s``."""
        now = at if now is None else now
        if self.state != NORMAL or at < self.since:
            return None
        # the agent's traffic over all tools first, then each tool alone
        def pooled(tool: str) -> Callable[[int], tuple[int, int]] | None:
            if not tool or tenant is None:
                return None
            return lambda seconds: tenant(tool, at, seconds)

        found = next(((name, w, hit) for name, w in _windows(window).items()
                      if (hit := self.entering(at, w, pooled(name))) is not None), None)
        if found is None:
            return None
        tool, hit_window, (which, seconds, calls, failures) = found
        rule = self.rule
        when = rule.when
        bound = lower_bound(failures, calls, when.alpha)
        reason = (f"{rule.name}: {failures} errors in {calls} calls over {seconds}s "
                  f"({failures / calls:.1%}); {when.confidence:.2%} lower bound {bound:.1%} > "
                  f"{when.tool_error_rate_gt:.1%}")
        if tool:
            reason = f"{reason} on {tool}"
        if which == "tenant":
            reason = f"{reason}, tenant-wide"  # details.window says so too; kept short for tables
        details = self._details(which, seconds, calls, failures, at + offset)
        details["tool"] = tool or "*"
        details["lower_bound"] = round(bound, 5)
        details["critical_errors"] = critical_failures(calls, when.tool_error_rate_gt,
                                                       when.alpha)
        if at < now:
            details["late_window"] = True
        return self._move(DEGRADED_STATE[rule.action], now, offset, reason,
                          hit_window.failed_ids(at, seconds), details)

    def exit_if(self, now: float, offset: float, window: CountWindow | Windows,
                tenant: TenantTotals | None = None) -> Transition | None:
        """From degraded: leave once the window's failures are no longer significant
        evidence (at ``exit_confidence``) of a rate above ``exit_below``, and the mode has
        been held ``min_hold_s`` (agent time). A 16-call window with one error (6 %) is no
        such evidence; requiring the raw rate under 4 % would hold small agents for
        minutes after a recovery. With ``tenant``, the tenant-wide window of each tool the
        agent called within ``long_window_s`` must be no such evidence either."""
        rule = self.rule
        if self.state == NORMAL:
            return None
        held = now - self.since
        if held < rule.min_hold_s:
            return None
        windows = _windows(window)
        for w in windows.values():  # any of them still evidence of a rate over exit_below
            c, f = w.totals(now, self.window_s)
            if c and f >= critical_failures(c, rule.exit_threshold, rule.exit_alpha):
                return None
        if tenant is not None and rule.when.tenant_window_s:
            # nor the tenant's window of a tool it called lately: a small agent's own
            # minute (2 calls, no failure) is no evidence that the outage is over, its
            # tenant's is; an agent with no counted call for ``recent`` seconds is let go
            recent = rule.when.long_window_s or self.window_s
            for tool, w in windows.items():
                if tool and now - w.newest < recent:
                    c, f = tenant(tool, now, self.window_s)
                    if c and f >= critical_failures(c, rule.exit_threshold, rule.exit_alpha):
                        return None
        calls, failures = next(iter(windows.values())).totals(now, self.window_s)
        rate = failures / calls if calls else 0.0
        reason = (f"{rule.name}: {failures} errors in {calls} calls over {self.window_s}s "
                  f"({rate:.1%}) are no evidence of > {rule.exit_threshold:.1%}; "
                  f"{held:.0f}s in {self.state}")
        return self._move(NORMAL, now, offset, reason, (),
                          self._details("short", self.window_s, calls, failures, now + offset))

    def _details(self, which: str, seconds: int, calls: int, failures: int,
                 at_raw: float) -> dict[str, Any]:
        when = self.rule.when
        return {"rule_kind": "exact_binomial", "window": which, "window_s": seconds,
                "calls": calls, "errors": failures,
                "error_rate": round(failures / calls, 5) if calls else 0.0,
                "threshold": when.tool_error_rate_gt, "confidence": when.confidence,
                "min_calls": when.min_calls, "exit_below": self.rule.exit_threshold,
                "exit_confidence": self.rule.exit_confidence,
                "min_hold_s": self.rule.min_hold_s, "agent_time": at_raw}
