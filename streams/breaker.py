"""The circuit breaker state machine, resilience4j semantics, in event time.

CLOSED ─(failure rate ≥ threshold over the window, ≥ min_calls)→ OPEN
OPEN ─(wait_s of event time passed)→ HALF_OPEN
HALF_OPEN ─(probe_calls results, failure rate < threshold)→ CLOSED
HALF_OPEN ─(probe_calls results, failure rate ≥ threshold)→ OPEN

Pure logic: no Kafka, no faust. The processor feeds it results and the advancing event
time and publishes whatever :class:`Transition` it returns. Results that arrive while OPEN
(calls already in flight when it opened) are ignored, as resilience4j ignores calls it did
not permit. Only the durable part (:meth:`Breaker.snapshot`) goes to the faust table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.signals import CLOSED, HALF_OPEN, OPEN
from streams.policy import BreakerPolicy
from streams.windows import HopWindow


@dataclass(frozen=True, slots=True)
class Transition:
    previous: str
    state: str
    version: int
    ts: float
    reason: str
    triggered_by: tuple[str, ...] = ()
    details: tuple[tuple[str, Any], ...] = ()


class Breaker:
    def __init__(self, policy: BreakerPolicy, window_s: int, hop_s: int):
        self.policy = policy
        self.window = HopWindow(window_s, hop_s)
        self.state = CLOSED
        self.version = 0
        self.opened_at = 0.0
        self.probe_calls = 0
        self.probe_failures = 0
        self.probe_ids: list[str] = []

    # -- durable state ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "version": self.version, "opened_at": self.opened_at,
                "probe_calls": self.probe_calls, "probe_failures": self.probe_failures}

    def restore(self, snap: dict[str, Any]) -> None:
        self.state = snap["state"]
        self.version = int(snap["version"])
        self.opened_at = float(snap["opened_at"])
        self.probe_calls = int(snap.get("probe_calls", 0))
        self.probe_failures = int(snap.get("probe_failures", 0))

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
        if state == CLOSED:
            # resilience4j resets its metrics on closing: old failures must not re-trip it
            self.window.clear()
        return Transition(previous, state, self.version, ts, reason, ids,
                          tuple(sorted(details.items())))

    def record(self, ts: float, *, failed: bool, timeout: bool = False,
               latency_ms: float = 0.0, event_id: str = "") -> Transition | None:
        """One tool result at event time ``ts``."""
        p = self.policy
        if self.state == OPEN:
            return self.advance(ts)
        if self.state == HALF_OPEN:
            self.probe_calls += 1
            self.probe_failures += failed
            self.probe_ids.append(event_id)
            if self.probe_calls < p.probe_calls:
                return None
            rate = self.probe_failures / self.probe_calls
            ids = tuple(self.probe_ids)
            if rate >= p.failure_rate_threshold:
                return self._move(OPEN, ts, f"{self.probe_failures}/{self.probe_calls} probe "
                                  f"calls failed", ids, failure_rate=round(rate, 4))
            return self._move(CLOSED, ts, f"{self.probe_calls - self.probe_failures}/"
                              f"{self.probe_calls} probe calls passed", ids,
                              failure_rate=round(rate, 4))
        self.window.add(ts, failed=failed, timeout=timeout, latency_ms=latency_ms,
                        event_id=event_id)
        if not failed:
            return None
        totals = self.window.totals(ts)
        if totals.calls >= p.min_calls and totals.failure_rate >= p.failure_rate_threshold:
            return self._move(
                OPEN, ts,
                f"failure rate {totals.failure_rate:.0%} ≥ {p.failure_rate_threshold:.0%} over "
                f"{totals.calls} calls in {self.window.n_buckets * self.window.hop_s}s",
                totals.failed_ids, failure_rate=round(totals.failure_rate, 4),
                calls=totals.calls, failures=totals.failures)
        return None

    def advance(self, now: float) -> Transition | None:
        """Event time moved to ``now``: OPEN becomes HALF_OPEN after ``wait_s``."""
        if self.state == OPEN and now - self.opened_at >= self.policy.wait_s:
            return self._move(HALF_OPEN, now, f"open for {self.policy.wait_s:g}s; permitting "
                              f"{self.policy.probe_calls} probe calls")
        self.window.prune(now)
        return None
