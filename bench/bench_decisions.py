"""Decision quality of the control loop: today's rule against the new one, no Kafka.

    .venv/bin/python bench/bench_decisions.py [--hours 12.5] [--agents 80] [--seed 1] [--json]

A seeded fleet (tenants x agents, 5 to 500 calls a minute, log-uniform; tools failing
0.5 % to 3 % at rest) runs for ``--hours`` of event time, with outages of one tool at
10/20/50/80 % errors for one tenant or all, 30 s to 10 min long. Some agents' clocks are
skewed by 2 to 15 minutes either way; during some outages one of four partitions lags by
1 to 5 minutes (its events arrive that much later). Events are fed in arrival order, one
record per (tenant, partition, second), to the pure decision code the worker runs
(``streams.decide.Controller``) and to a re-implementation of the previous rule
(``LegacyController`` below: one worker-wide clock = the largest timestamp, safe mode at
rate > 5 % over >= 20 calls, exit <= 2 %).

Scoring (times are the bench's true time at which the deciding record arrived):
- an episode = a breaker CLOSED->OPEN or a safe mode normal->degraded; one that starts on a
  scope an outage affects (the tool's breaker in an affected tenant, or an agent calling
  the tool there) between its start and its end + 2 min (+ the lag of a partition lagging
  in that tenant then: its results arrive that much later) belongs to that outage, any
  other is a false trip (per 1,000 agent-hours); when the signal names the tool that
  tripped it (``details.tool``) and that tool had one of those outages, it belongs to
  that tool's outages only (an agent hit by two outages of two tools in a row is not
  counted twice by the first);
- recall: outages with at least one episode, by error rate; ``recall_ge20`` for >= 20 %
  lasting >= 60 s (skewed and lagging ones included);
- detection: first episode - outage start; p50/p99 over outages >= 20 % lasting >= 60 s
  whose affected agents include one with >= 60 calls/min on the tool;
- reset: end of each outage episode (CLOSED / normal) - outage end (or - the episode's
  start, when a lagging partition's results tripped it after the end), p50/p99;
- episodes per outage: episodes per (outage, scope) that had one; half-open probe
  cycles inside an episode are counted apart.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentledger.schemas.signals import CLOSED, HALF_OPEN, NORMAL, OPEN, READ_ONLY, ControlSignal
from agentledger.streams.control_policy import Policy, load_policy
from agentledger.streams.decide import Controller
from agentledger.streams.facts import ToolResult


# -- the previous rule, re-implemented for comparison --
# The decision rule as it was before per-agent clocks and significance tests, for
# ``bench_decisions.py`` to compare against: one worker-wide event-time clock (the largest
# timestamp seen), safe mode when the window's error rate > 5 % over >= 20 calls (exit at
# <= 2 % after 60 s), breakers at >= 50 % over >= 20 calls in the window ending at the
# failing result's own timestamp, 30 s open, 5 probes.
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
        for ts, agent, tool, status, *_ in facts:
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

GRACE_S = 120.0
PARTITIONS = 4
SIZES = (0.1, 0.2, 0.5, 0.8)


@dataclass
class Agent:
    tenant: str
    name: str
    per_min: float
    tools: list[str]
    weights: list[float]
    skew: float = 0.0


@dataclass
class Outage:
    oid: int
    tool: str
    tenants: tuple[str, ...]
    start: float
    end: float
    rate: float
    lag: float = 0.0
    skewed: bool = False
    episodes: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Fleet:
    agents: list[Agent]
    base: dict[tuple[str, str], float]
    outages: list[Outage]
    hours: float


def build_fleet(seed: int, n_agents: int, hours: float, n_outages: int) -> Fleet:
    rng = random.Random(seed)
    tenants = [f"t{i}" for i in range(max(1, n_agents // 20))]
    tools = [f"tool{j}" for j in range(6)]
    base = {(t, tool): rng.uniform(0.005, 0.03) for t in tenants for tool in tools}
    agents = []
    for i in range(n_agents):
        tenant = tenants[i % len(tenants)]
        k = rng.randint(1, 3)
        used = rng.sample(tools, k)
        skew = rng.choice((-1, 1)) * rng.uniform(120, 900) if rng.random() < 0.2 else 0.0
        agents.append(Agent(tenant, f"a{i}", math.exp(rng.uniform(math.log(5), math.log(500))),
                            used, [rng.uniform(0.5, 1.0) for _ in used], skew))
    horizon = hours * 3600
    outages: list[Outage] = []
    attempts = 0
    while len(outages) < n_outages and attempts < n_outages * 50:
        attempts += 1
        tool = rng.choice(tools)
        scope = tuple(tenants) if rng.random() < 0.25 else (rng.choice(tenants),)
        duration = math.exp(rng.uniform(math.log(30), math.log(600)))
        start = rng.uniform(600, horizon - duration - 900)
        if any(o.tool == tool and set(o.tenants) & set(scope)
               and o.start - 900 < start + duration and start < o.end + 900 for o in outages):
            continue
        lag = rng.uniform(60, 300) if rng.random() < 0.25 else 0.0
        skewed = any(a.skew and a.tenant in scope and tool in a.tools for a in agents)
        outages.append(Outage(len(outages), tool, scope, start, start + duration,
                              SIZES[len(outages) % 4], lag, skewed))
    return Fleet(agents, base, outages, hours)


def _error_rate(fleet: Fleet, active: dict[tuple[str, str], Outage], tenant: str,
                tool: str) -> float:
    o = active.get((tenant, tool))
    return o.rate if o is not None else fleet.base[(tenant, tool)]


def generate(fleet: Fleet, seed: int):
    """Yield ``(arrival_second, tenant, partition, facts)`` records in arrival order."""
    rng = random.Random(seed + 1)
    horizon = int(fleet.hours * 3600)
    by_start = sorted(fleet.outages, key=lambda o: o.start)
    pending: list[tuple[float, int, str, int, list]] = []
    seq = 0
    active: dict[tuple[str, str], Outage] = {}
    lagging: dict[str, Outage] = {}
    nxt = 0
    for second in range(horizon):
        for key in [k for k, o in active.items() if o.end <= second]:
            del active[key]
        for t in [t for t, o in lagging.items() if o.end + 300 <= second]:
            del lagging[t]
        while nxt < len(by_start) and by_start[nxt].start <= second:
            o = by_start[nxt]
            for t in o.tenants:
                active[(t, o.tool)] = o
                if o.lag:
                    lagging[t] = o
            nxt += 1
        batch: dict[tuple[str, int], list] = defaultdict(list)
        for a in fleet.agents:
            lam = a.per_min / 60
            n = _poisson(rng, lam)
            for _ in range(n):
                true_ts = second + rng.random()
                tool = rng.choices(a.tools, a.weights)[0]
                failed = rng.random() < _error_rate(fleet, active, a.tenant, tool)
                part = rng.randrange(PARTITIONS)
                seq += 1
                fact = ToolResult(true_ts + a.skew, a.name, tool,
                                  "error" if failed else "ok", 0.0, f"e{seq}" if failed else "",
                                  "")
                o = lagging.get(a.tenant)
                if o is not None and part == 0 and o.start - 60 <= second < o.end + 300:
                    heapq.heappush(pending, (second + o.lag, seq, a.tenant, part, fact))
                else:
                    batch[(a.tenant, part)].append(fact)
        while pending and pending[0][0] <= second:
            _, _, tenant, part, fact = heapq.heappop(pending)
            batch[(tenant, part + 100)].append(fact)
        for (tenant, part), facts in batch.items():
            facts.sort(key=lambda f: f[1])
            yield second, tenant, part, facts


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class Episodes:
    """Transitions seen, as (scope, kind, start, end, probe_cycles, tool)."""

    open: dict[str, list] = field(default_factory=dict)
    done: list[list] = field(default_factory=list)

    def signal(self, kind: str, scope: str, previous: str, state: str, at: float,
               tool: str = "") -> None:
        """``tool``: the tool whose results tripped it, when the signal says ("" or "*":
        not one tool)."""
        resting = CLOSED if kind == "breaker" else NORMAL
        if previous == resting and state != resting:
            self.open[scope] = [scope, kind, at, None, 0, tool]
        elif state == resting and scope in self.open:
            ep = self.open.pop(scope)
            ep[3] = at
            self.done.append(ep)
        elif kind == "breaker" and state == OPEN and scope in self.open:
            self.open[scope][4] += 1

    def all(self) -> list[list]:
        return self.done + list(self.open.values())


def run_rule(fleet: Fleet, seed: int, controller: Controller | LegacyController) -> Episodes:
    eps = Episodes()
    for second, tenant, _, facts in generate(fleet, seed):
        out = controller.apply(tenant, facts, arrival=float(second))
        out.extend(controller.advance())
        for s in out.signals:
            tool = str(s.details.get("tool", "")) if isinstance(s, ControlSignal) else ""
            eps.signal(s.kind, s.scope, s.previous_state, s.state, float(second), tool)
    return eps


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def _hits(users: dict[tuple[str, str], list[Agent]], o: Outage, tenant: str, kind: str,
          scope: str) -> bool:
    """Does outage ``o`` hit this scope (the tool's breaker, or an agent calling it)?"""
    if tenant not in o.tenants:
        return False
    if kind == "breaker":
        return scope.endswith(f"/{o.tool}")
    return any(f"{tenant}/{a.name}" == scope for a in users[(tenant, o.tool)])


def attribute(fleet: Fleet, eps: Episodes, users: dict[tuple[str, str], list[Agent]]
              ) -> tuple[int, int, dict[int, dict[str, list]]]:
    """(false trips, probe cycles, outage id -> scope -> [(start, end, recovered_at)])."""
    # a lagging partition delays every result of its tenant, whichever outage it came with
    tenant_lag = {o.oid: max([x.lag for x in fleet.outages if x.lag and set(x.tenants)
                              & set(o.tenants) and x.start - 60 < o.end + 300
                              and o.start < x.end + 300] + [0.0])
                  for o in fleet.outages}
    false_trips = probe_cycles = 0
    per_outage: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for scope, kind, start, end, cycles, tool in eps.all():
        tenant = scope.split("/")[0]
        owners = [o for o in fleet.outages
                  if o.start <= start <= o.end + tenant_lag[o.oid] + GRACE_S
                  and _hits(users, o, tenant, kind, scope)]
        if not owners:
            false_trips += 1
            continue
        # an agent calling two tools can be hit by two outages in a row: an episode its
        # signal says one tool tripped belongs to that tool's outage, not to the other
        # one's grace period (which would count it as the other's second episode)
        owners = [o for o in owners if o.tool == tool] or owners
        probe_cycles += cycles
        # the outage it recovers from: the last to end of those hitting this scope while
        # it was tripped (or, if a lagging partition's results tripped it after the end,
        # its own start)
        hitting = [o for o in fleet.outages
                   if (end is None or o.start <= end) and o.end + tenant_lag[o.oid] >= start
                   and _hits(users, o, tenant, kind, scope)]
        last_end = max([o.end for o in hitting] + [start])
        for o in owners:
            per_outage[o.oid][scope].append((start, end, last_end))
    return false_trips, probe_cycles, per_outage


def score(fleet: Fleet, eps: Episodes) -> dict:
    users: dict[tuple[str, str], list[Agent]] = defaultdict(list)
    for a in fleet.agents:
        for tool in a.tools:
            users[(a.tenant, tool)].append(a)
    false_trips, probe_cycles, per_outage = attribute(fleet, eps, users)
    agent_hours = len(fleet.agents) * fleet.hours
    recall: dict[str, float] = {}
    for size in SIZES:
        group = [o for o in fleet.outages if o.rate == size]
        recall[f"{size:.0%}"] = round(sum(o.oid in per_outage for o in group)
                                      / max(1, len(group)), 4)
    ge20 = [o for o in fleet.outages if o.rate >= 0.2 and o.end - o.start >= 60]
    missed = [o for o in ge20 if o.oid not in per_outage]
    detect: list[float] = []
    detect_by: dict[str, list[float]] = defaultdict(list)
    for o in fleet.outages:
        if o.oid not in per_outage or o.rate < 0.2 or o.end - o.start < 60:
            continue
        first = min(s for spans in per_outage[o.oid].values() for s, _, _ in spans)
        detect_by[f"{o.rate:.0%}"].append(first - o.start)
        big = any(a.per_min * _share(a, o.tool) >= 60 for t in o.tenants
                  for a in users[(t, o.tool)])
        if big:
            detect.append(first - o.start)
    resets = [end - last_end for scopes in per_outage.values()
              for spans in scopes.values() for _, end, last_end in spans[-1:]
              if end is not None]
    unresolved = sum(1 for scopes in per_outage.values() for spans in scopes.values()
                     if spans[-1][1] is None)
    episodes = [len(spans) for scopes in per_outage.values() for spans in scopes.values()]
    extra = defaultdict(int)
    for scopes in per_outage.values():
        for scope, spans in scopes.items():
            extra["breaker" if "/*/" in scope else "safe_mode"] += len(spans) - 1
    return {
        "false_trips": false_trips,
        "false_trips_per_1000h": round(false_trips / agent_hours * 1000, 2),
        "recall_ge20": round(1 - len(missed) / max(1, len(ge20)), 4),
        "recall_by_size": recall,
        "missed_ge20": [(o.oid, o.tool, f"{o.rate:.0%}", round(o.end - o.start), o.lag > 0,
                         o.skewed) for o in missed][:10],
        "detect_p50_s": _pct(detect, 0.5), "detect_p99_s": _pct(detect, 0.99),
        "detect_p99_by_size_s": {k: _pct(v, 0.99) for k, v in sorted(detect_by.items())},
        "reset_p50_s": _pct(resets, 0.5), "reset_p99_s": _pct(resets, 0.99),
        "unresolved_episodes": unresolved,
        "episodes_per_outage": round(statistics.fmean(episodes), 3) if episodes else None,
        "probe_cycles": probe_cycles, "extra_episodes": dict(extra),
    }


def _share(agent: Agent, tool: str) -> float:
    return agent.weights[agent.tools.index(tool)] / sum(agent.weights)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=12.5)
    ap.add_argument("--agents", type=int, default=80)
    ap.add_argument("--outages", type=int, default=220)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policy", help="policy YAML for the new rule (default: packaged)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    fleet = build_fleet(args.seed, args.agents, args.hours, args.outages)
    policy: Policy = load_policy(args.policy)
    results = {}
    timings = {}
    for name, controller in (("new", Controller(policy, tool_health=False)),
                             ("old", LegacyController())):
        t0 = time.perf_counter()
        results[name] = score(fleet, run_rule(fleet, args.seed, controller))
        timings[name] = round(time.perf_counter() - t0, 1)
    new, old = results["new"], results["old"]
    summary = {
        "agent_hours": round(len(fleet.agents) * fleet.hours),
        "outages": len(fleet.outages),
        "outages_skewed": sum(o.skewed for o in fleet.outages),
        "outages_lagging": sum(o.lag > 0 for o in fleet.outages),
        "policy_version": policy.version, "seed": args.seed, "seconds": timings,
        **{k: new[k] for k in ("false_trips_per_1000h", "recall_ge20", "detect_p99_s",
                               "reset_p99_s", "episodes_per_outage")},
        "new": new, "old": old,
    }
    rows = [("false trips / 1,000 agent-hours", "false_trips_per_1000h"),
            ("recall, >=20% for >=60s", "recall_ge20"), ("detection p50 (s)", "detect_p50_s"),
            ("detection p99 (s)", "detect_p99_s"), ("reset p50 (s)", "reset_p50_s"),
            ("reset p99 (s)", "reset_p99_s"), ("episodes per outage", "episodes_per_outage"),
            ("half-open probe cycles", "probe_cycles"),
            ("episodes not ended", "unresolved_episodes")]
    rows += [(f"recall at {size}", ("recall_by_size", size)) for size in new["recall_by_size"]]
    print(f"{summary['agent_hours']} agent-hours, {len(fleet.outages)} outages "
          f"({summary['outages_skewed']} with skewed agents, {summary['outages_lagging']} "
          f"with a lagging partition), seed {args.seed}")
    print(f"{'':34} {'old rule':>12} {'new rule':>12}")
    for label, key in rows:
        def get(r: dict, k=key):
            return r[k[0]][k[1]] if isinstance(k, tuple) else r[k]
        print(f"{label:34} {get(old)!s:>12} {get(new)!s:>12}")
    if new["missed_ge20"]:
        print("new rule missed (id, tool, rate, s, lagging, skewed):", new["missed_ge20"])
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
