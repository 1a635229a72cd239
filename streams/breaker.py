"""The circuit breaker state machine, resilience4j semantics, in each agent's event time.

CLOSED ─(failure rate ≥ threshold over the window, ≥ min_calls)→ OPEN
OPEN ─(wait_s of event time passed)→ HALF_OPEN
HALF_OPEN ─(≥ probe_calls results: sequential test says recovered)→ CLOSED
HALF_OPEN ─(≥ probe_calls results: sequential test says still failing, or undecided
            after max_probe_calls)→ OPEN

One breaker per (tenant, tool) sees the results of every agent of the tenant that calls
the tool, and agents' clocks disagree (skew, a lagging partition). So the window is kept
per agent, each read at that agent's own clock, and summed; and "wait_s passed" means
wait_s passed on the clock of some agent that was calling the tool (each agent's elapsed
time is measured from its own clock reading when the breaker opened). No agent's clock
can make another agent's results fall out of the window or fast-forward the wait.

Noise: with the default 50 % threshold and 20 calls, a tool failing 3 % of the time opens
it with probability P(Binomial(20, 0.03) ≥ 10) ≈ 1e-10 per look; the resilience4j rule
already bounds false trips here, so it stays as it is (docs/control-loop.md).

Pure logic: no Kafka, no faust. Results that arrive while OPEN are ignored, as
resilience4j ignores calls it did not permit. Only :meth:`Breaker.snapshot` is durable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentledger.schemas.signals import CLOSED, HALF_OPEN, MAX_TRIGGER_IDS, OPEN
from agentledger.streams.control_policy import BreakerPolicy
from agentledger.streams.windows import CountWindow


@dataclass(frozen=True, slots=True)
class Transition:
    previous: str
    state: str
    version: int
    ts: float
    """Raw event time (the deciding agent's own clock)."""
    reason: str
    triggered_by: tuple[str, ...] = ()
    details: tuple[tuple[str, Any], ...] = ()


Clock = Callable[[str], float]
"""agent -> that agent's mapped clock."""


def _own_clock(ts: float) -> Clock:
    return lambda agent: ts


class Breaker:
    def __init__(self, policy: BreakerPolicy, window_s: int, hop_s: int,
                 keep_s: float | None = None):
        self.policy = policy
        self.window_s = window_s
        self.hop_s = hop_s
        self.keep_s = keep_s if keep_s is not None else window_s
        self.subs: dict[str, CountWindow] = {}
        self.state = CLOSED
        self.version = 0
        self.opened_at = 0.0
        self.marks: dict[str, float] = {}
        """agent -> its mapped clock when it opened the breaker or was first seen after."""
        self.default_mark: float | None = None
        self.probe_calls = 0
        self.probe_failures = 0
        self.probe_ids: list[str] = []

    # -- durable state ---------------------------------------------------------------

    def snapshot(self, offsets: Callable[[str], float] | None = None) -> dict[str, Any]:
        off = offsets or (lambda agent: 0.0)
        return {"state": self.state, "version": self.version, "opened_at": self.opened_at,
                "probe_calls": self.probe_calls, "probe_failures": self.probe_failures,
                "marks": {a: m + off(a) for a, m in self.marks.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        self.state = snap["state"]
        self.version = int(snap["version"])
        self.opened_at = float(snap["opened_at"])
        self.probe_calls = int(snap.get("probe_calls", 0))
        self.probe_failures = int(snap.get("probe_failures", 0))
        self.marks = {a: float(m) for a, m in (snap.get("marks") or {}).items()}
        legacy = "marks" not in snap  # a snapshot from before per-agent clocks
        self.default_mark = self.opened_at if self.state == OPEN and legacy else None

    # -- transitions -----------------------------------------------------------------

    def _move(self, state: str, ts: float, reason: str, ids: tuple[str, ...] = (),
              **details: Any) -> Transition:
        previous, self.state = self.state, state
        self.version += 1
        if state == OPEN:
            self.opened_at = ts
        if state in (HALF_OPEN, CLOSED):
            self.probe_calls = self.probe_failures = 0
            self.probe_ids = []
            self.marks = {}
            self.default_mark = None
        if state == CLOSED:
            # resilience4j resets its metrics on closing: old failures must not re-trip it
            self.subs.clear()
        return Transition(previous, state, self.version, ts, reason, ids,
                          tuple(sorted(details.items())))

    def totals(self, clock: Clock) -> tuple[int, int]:
        """(calls, failures) over every agent's window, each at its own clock."""
        calls = failures = 0
        for agent, sub in self.subs.items():
            c, f = sub.totals(clock(agent), self.window_s)
            calls += c
            failures += f
        return calls, failures

    def record(self, ts: float, *, failed: bool, agent: str = "", event_id: str = "",
               clock: Clock | None = None, offset: float = 0.0, late: bool = False,
               timeout: bool = False, latency_ms: float = 0.0) -> Transition | None:
        """One tool result of ``agent`` at its mapped time ``ts``. ``clock`` gives every
        agent's mapped clock (default: everyone is at ``ts``); ``offset`` maps this
        agent's time back to its raw clock for the transition. A ``late`` result (behind
        its agent's clock) is never a probe (probes are calls made after half-opening)
        and never trips it alone."""
        p = self.policy
        if self.state == OPEN:
            return self.advance(ts, agent, offset)
        if self.state == HALF_OPEN:
            return None if late else self._probe(ts, failed, agent, event_id, offset)
        sub = self.subs.get(agent)
        if sub is None:
            sub = self.subs[agent] = CountWindow(self.hop_s, self.keep_s)
        sub.add(ts, failed, event_id)
        if not failed or late:
            # a late failure counts in the window but does not trip on its own: a
            # breaker refuses every call to the tool now, on evidence of now
            return None
        own = clock or _own_clock(ts)

        def at(a: str) -> float:
            return ts if a == agent else own(a)

        calls, failures = self.totals(at)
        if calls < p.min_calls or failures < p.failure_rate_threshold * calls:
            return None
        rate = failures / calls
        ids: list[str] = []
        for a, w in self.subs.items():
            ids.extend(w.failed_ids(at(a), self.window_s))
        t = self._move(
            OPEN, ts + offset,
            f"failure rate {rate:.0%} ≥ {p.failure_rate_threshold:.0%} over {calls} calls "
            f"in {self.window_s}s", tuple(ids[-MAX_TRIGGER_IDS:]),
            failure_rate=round(rate, 4), calls=calls, failures=failures, errors=failures,
            rule_kind="failure_rate", window_s=self.window_s, min_calls=p.min_calls,
            threshold=p.failure_rate_threshold, agents=len(self.subs))
        # elapsed time is measured on the clock of the agent that tripped it, and on each
        # other agent's clock from its first result after this (a quiet agent's clock
        # reading now may be stale: counting from it would shorten the wait)
        self.marks = {agent: ts}
        return t

    def _probe(self, ts: float, failed: bool, agent: str, event_id: str, offset: float
               ) -> Transition | None:
        """One half-open result. Wald's sequential test between "recovered" (failure rate
        ``recovered_below``) and "still failing" (``failure_rate_threshold``): a tool
        failing at the threshold closes a half-open breaker with probability at most
        ``1 - probe_confidence`` per cycle, so an outage right at the threshold does not
        flap it closed and open again; a recovered tool closes it in about ten results."""
        p = self.policy
        self.probe_calls += 1
        self.probe_failures += failed
        self.probe_ids.append(event_id)
        n, f = self.probe_calls, self.probe_failures
        if n < p.probe_calls:
            return None
        good, bad = p.recovered_below, p.failure_rate_threshold
        llr = (n - f) * math.log((1 - good) / (1 - bad)) + f * math.log(good / bad)
        bound = math.log(1 / (1 - p.probe_confidence))
        if llr >= bound:
            state, verdict = CLOSED, "passed"
        elif llr <= -bound or n >= p.max_probe_calls:
            state, verdict = OPEN, "failed"
        else:
            return None
        rate = f / n
        t = self._move(state, ts + offset, f"{n - f}/{n} probe calls passed: probes {verdict} "
                       f"(sequential test, {rate:.0%} failing)",
                       tuple(self.probe_ids[-MAX_TRIGGER_IDS:]), failure_rate=round(rate, 4),
                       rule_kind="half_open_sprt", calls=n, errors=f,
                       threshold=bad, recovered_below=good, llr=round(llr, 3),
                       bound=round(bound, 3))
        if state == OPEN:
            self.marks = {agent: ts}
        return t

    def advance(self, now: float, agent: str = "", offset: float = 0.0) -> Transition | None:
        """``agent``'s clock is at mapped ``now``: OPEN becomes HALF_OPEN once wait_s has
        passed on it since the breaker opened."""
        if self.state != OPEN:
            return None
        mark = self.marks.get(agent)
        if mark is None:
            mark = self.marks[agent] = (self.default_mark if self.default_mark is not None
                                        else now)
        if now - mark >= self.policy.wait_s:
            return self._move(HALF_OPEN, now + offset, f"open for {self.policy.wait_s:g}s; "
                              f"permitting {self.policy.probe_calls} probe calls",
                              rule_kind="open_wait", wait_s=self.policy.wait_s)
        return None
