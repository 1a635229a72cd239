"""Per-agent event-time clocks: decisions never ride one producer's clock.

Every agent (tenant, agent) is a clock source. Its clock is the largest event time it has
sent; every window of that agent, and every agent's share of a breaker, is read in that
agent's own time. An agent whose host clock is 15 minutes ahead or behind therefore sees
its own traffic as live, and cannot push anyone else's events out of their windows.

Lateness, per source, against its own clock:

- at or after the clock: on time, the clock moves on;
- behind by at most ``allowed_lateness_s``: placed at its own time (a partition that lags a
  little lands in the right bucket, and the decision is taken on the window it belongs to);
- behind by more: placed at the clock (counted by arrival, so nothing is dropped) and
  counted in ``late_events``.

A source that keeps sending events far behind its clock, with none on time in between,
across more than one input record and for ``rejoin_after_s`` of arrival (wall) time, has
had its clock moved back (a scenario or backlog
replayed from the past, an NTP step, an agent restarted on another host). After
``rejoin_after_events`` such events the source is *re-anchored*: an offset maps its new
timeline onto the end of its old one, so its windows keep sliding as if it were live.
Internally times are *mapped* (raw minus offset, continuous per source); signals and
snapshots carry the agent's own raw time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Source:
    clock: float
    """Mapped time of the newest event (monotone)."""
    offset: float = 0.0
    """raw - mapped; non-zero once the source was re-anchored."""
    behind: int = 0
    """Consecutive events far (more than a window) behind the clock."""
    behind_records: int = 0
    behind_max_raw: float = 0.0
    behind_since: float = 0.0
    """Arrival time of the first event of the current far-behind streak."""
    record: int = -1
    late: int = 0
    rejoins: int = 0
    arrived: float = 0.0
    """Arrival (wall) time of the last event, for idle advance."""
    arrival_clock: float = 0.0

    def raw(self, mapped: float) -> float:
        return mapped + self.offset


class SourceClocks:
    """All sources of one worker; ``place`` is on the per-result hot path."""

    def __init__(self, allowed_lateness_s: float, far_behind_s: float,
                 rejoin_after_events: int, rejoin_after_s: float = 0.0):
        self.allowed_lateness_s = allowed_lateness_s
        self.far_behind_s = far_behind_s
        self.rejoin_after_events = rejoin_after_events
        self.rejoin_after_s = rejoin_after_s
        self.sources: dict[tuple[str, str], Source] = {}
        self.late_events = 0
        self.rejoins = 0
        self._record = 0

    def next_record(self) -> None:
        """A new input record begins (re-anchoring needs evidence from more than one)."""
        self._record += 1

    def place(self, tenant: str, agent: str, ts: float, arrival: float = 0.0
              ) -> tuple[float, bool]:
        """``(mapped time to count the event at, whether it was late beyond allowance)``."""
        key = (tenant, agent)
        s = self.sources.get(key)
        if s is None:
            self.sources[key] = Source(ts, record=self._record, arrived=arrival,
                                       arrival_clock=ts)
            return ts, False
        new_record = s.record != self._record
        s.record = self._record
        s.arrived = arrival
        m = ts - s.offset
        if m >= s.clock:
            s.clock = s.arrival_clock = m
            s.behind = 0
            return m, False
        lag = s.clock - m
        if lag <= self.far_behind_s:
            s.behind = 0
        else:
            if s.behind == 0:
                s.behind_records = 0
                s.behind_max_raw = ts
                s.behind_since = arrival
            s.behind += 1
            s.behind_max_raw = max(s.behind_max_raw, ts)
            s.behind_records += new_record
            if s.behind >= self.rejoin_after_events and s.behind_records >= 2 and (
                    not arrival or arrival - s.behind_since >= self.rejoin_after_s):
                # the source's clock moved back: continue its timeline from where it was
                s.offset = s.behind_max_raw - s.clock
                s.behind = 0
                s.rejoins += 1
                self.rejoins += 1
                return s.clock - (s.behind_max_raw - ts), False
        if lag <= self.allowed_lateness_s:
            return m, False
        s.late += 1
        self.late_events += 1
        return s.clock, True

    def clock(self, tenant: str, agent: str) -> float | None:
        s = self.sources.get((tenant, agent))
        return s.clock if s is not None else None

    def raw(self, tenant: str, agent: str, mapped: float) -> float:
        s = self.sources.get((tenant, agent))
        return mapped + s.offset if s is not None else mapped

    def idle(self, wall: float, idle_s: float) -> None:
        """Nothing arrived from a source for more than ``idle_s`` (wall): let its clock run
        on with the wall clock from its last arrival, so open breakers and held safe modes
        of a silent agent still move on. Arrival-relative, so skew does not matter."""
        for s in self.sources.values():
            if s.arrived and wall - s.arrived > idle_s:
                s.clock = max(s.clock, s.arrival_clock + (wall - s.arrived - idle_s))

    def push_all(self, raw_now: float) -> None:
        """Every source's raw clock has reached at least ``raw_now`` (tests, backtests)."""
        for s in self.sources.values():
            s.clock = max(s.clock, raw_now - s.offset)
