"""The decision rule as it was before per-agent clocks and significance tests, for
``bench_decisions.py`` to compare against: one worker-wide event-time clock (the largest
timestamp seen), safe mode when the window's error rate > 5 % over >= 20 calls (exit at
<= 2 % after 60 s), breakers at >= 50 % over >= 20 calls in the window ending at the
failing result's own timestamp, 30 s open, 5 probes."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.signals import CLOSED, HALF_OPEN, NORMAL, OPEN, READ_ONLY


@dataclass
class Signal:
    kind: str
    scope: str
    previous_state: str
    state: str


@dataclass
class Out:
    signals: list[Signal] = field(default_factory=list)

    def extend(self, other: Out) -> None:
        self.signals += other.signals


class _Window:
    def __init__(self) -> None:
        self.buckets: dict[int, list[int]] = {}

    def add(self, ts: float, failed: bool) -> None:
        b = self.buckets.setdefault(int(ts // 5), [0, 0])
        b[0] += 1
        b[1] += failed

    def totals(self, now: float) -> tuple[int, int]:
        last = int(now // 5)
        c = f = 0
        for i in range(last - 11, last + 1):
            b = self.buckets.get(i)
            if b:
                c += b[0]
                f += b[1]
        if len(self.buckets) > 40:
            for i in [i for i in self.buckets if i < last - 12]:
                del self.buckets[i]
        return c, f


class _Breaker:
    def __init__(self) -> None:
        self.w = _Window()
        self.state = CLOSED
        self.opened = 0.0
        self.probes = [0, 0]


class LegacyController:
    def __init__(self) -> None:
        self.now = 0.0
        self.breakers: dict[tuple[str, str], _Breaker] = {}
        self.agents: dict[tuple[str, str], _Window] = {}
        self.modes: dict[tuple[str, str], list] = {}

    def apply(self, tenant: str, facts: list, arrival: float = 0.0) -> Out:
        out = Out()
        touched = set()
        for _, ts, agent, tool, status, *_ in facts:
            self.now = max(self.now, ts)
            failed = status == "error"
            self.agents.setdefault((tenant, agent), _Window()).add(ts, failed)
            touched.add(agent)
            b = self.breakers.setdefault((tenant, tool), _Breaker())
            scope = f"{tenant}/*/{tool}"
            if b.state == OPEN:
                self._wait(out, b, scope, ts)
            elif b.state == HALF_OPEN:
                b.probes[0] += 1
                b.probes[1] += failed
                if b.probes[0] >= 5:
                    state = OPEN if b.probes[1] / b.probes[0] >= 0.5 else CLOSED
                    self._move(out, b, scope, state, ts)
            else:
                b.w.add(ts, failed)
                c, f = b.w.totals(ts)
                if failed and c >= 20 and f / c >= 0.5:
                    self._move(out, b, scope, OPEN, ts)
        for agent in touched:
            self._safe_mode(out, tenant, agent)
        return out

    def _move(self, out: Out, b: _Breaker, scope: str, state: str, ts: float) -> None:
        out.signals.append(Signal("breaker", scope, b.state, state))
        b.state = state
        b.probes = [0, 0]
        if state == OPEN:
            b.opened = ts
        if state == CLOSED:
            b.w = _Window()

    def _wait(self, out: Out, b: _Breaker, scope: str, now: float) -> None:
        if now - b.opened >= 30:
            self._move(out, b, scope, HALF_OPEN, now)

    def _safe_mode(self, out: Out, tenant: str, agent: str) -> None:
        mode = self.modes.setdefault((tenant, agent), [NORMAL, 0.0])
        c, f = self.agents[(tenant, agent)].totals(self.now)
        rate = f / c if c else 0.0
        scope = f"{tenant}/{agent}"
        if mode[0] == NORMAL and c >= 20 and rate > 0.05:
            out.signals.append(Signal("safe_mode", scope, NORMAL, READ_ONLY))
            mode[:] = [READ_ONLY, self.now]
        elif mode[0] != NORMAL and self.now - mode[1] >= 60 and rate <= 0.02:
            out.signals.append(Signal("safe_mode", scope, mode[0], NORMAL))
            mode[:] = [NORMAL, self.now]

    def advance(self) -> Out:
        out = Out()
        for (tenant, tool), b in self.breakers.items():
            if b.state == OPEN:
                self._wait(out, b, f"{tenant}/*/{tool}", self.now)
        for (tenant, agent), mode in self.modes.items():
            if mode[0] != NORMAL:
                self._safe_mode(out, tenant, agent)
        return out
