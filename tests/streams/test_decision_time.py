"""Robust time in the pure decision code: skewed clocks, late and replayed events."""

from __future__ import annotations

import random

from agentledger.schemas.signals import CLOSED, HALF_OPEN, NORMAL, OPEN, READ_ONLY
from agentledger.streams.clocks import SourceClocks
from agentledger.streams.control_policy import load_policy
from agentledger.streams.decide import Controller, Decisions
from agentledger.streams.facts import ToolResult

POLICY = load_policy()
T0 = 1_800_000_000.0


def traffic(agent: str, start: float, seconds: float, per_s: float, fail: float,
            tool: str = "crm", seed: int = 0, skew: float = 0.0) -> list[ToolResult]:
    rng = random.Random(seed)
    facts, n = [], int(seconds * per_s)
    for i in range(n):
        ts = start + i / per_s
        failed = rng.random() < fail
        facts.append(ToolResult(ts + skew, agent, tool, "error" if failed else "ok", 10.0,
                                f"{agent}-{ts:.2f}", ""))
    return facts


def play(c: Controller, facts: list[ToolResult], record_s: float = 1.0,
         tenant: str = "acme") -> Decisions:
    """Feed facts in the order given, one record per ``record_s`` of list position time."""
    out = Decisions()
    batch: list[ToolResult] = []
    for fact in facts:
        batch.append(fact)
        if len(batch) >= 10:
            out.extend(c.apply(tenant, batch))
            out.extend(c.advance())
            batch = []
    if batch:
        out.extend(c.apply(tenant, batch))
        out.extend(c.advance())
    return out


def merged(*streams: list[ToolResult]) -> list[ToolResult]:
    return sorted((f for s in streams for f in s), key=lambda f: f.ts)


def transitions(out: Decisions, kind: str, scope: str) -> list[tuple[str, str]]:
    return [(s.previous_state, s.state) for s in out.signals
            if s.kind == kind and s.scope == scope]


def test_skewed_agents_are_decided_on_their_own_clocks() -> None:
    """One agent 15 min ahead, one 10 min behind, one on time; all hit an outage. With a
    worker-wide clock the ahead agent made the others' events 'old' and nothing tripped."""
    c = Controller(POLICY)
    streams = []
    for agent, skew in (("ahead", 900.0), ("behind", -600.0), ("ontime", 0.0)):
        streams.append(traffic(agent, T0, 60, 2, 0.01, seed=1, skew=skew))
        streams.append(traffic(agent, T0 + 60, 60, 2, 0.8, seed=2, skew=skew))
        streams.append(traffic(agent, T0 + 120, 180, 2, 0.01, seed=3, skew=skew))
    # arrival order is true time: sort on the unskewed time
    by_true = sorted((f for s in streams for f in s),
                     key=lambda f: f.ts - {"ahead": 900, "behind": -600}.get(f.agent, 0))
    out = play(c, by_true)
    for agent in ("ahead", "behind", "ontime"):
        assert transitions(out, "safe_mode", f"acme/{agent}") == [
            (NORMAL, READ_ONLY), (READ_ONLY, NORMAL)], agent
    breaker = transitions(out, "breaker", "acme/*/crm")
    assert breaker[0] == (CLOSED, OPEN) and breaker[-1] == (HALF_OPEN, CLOSED)
    assert sum(s == (CLOSED, OPEN) for s in breaker) == 1, "one episode"
    assert c.clocks.late_events == 0


def test_healthy_skewed_fleet_trips_nothing() -> None:
    c = Controller(POLICY)
    streams = [traffic(f"a{i}", T0, 600, 1 + i, 0.03, seed=i, skew=(i - 3) * 300.0)
               for i in range(7)]
    out = play(c, merged(*streams))
    assert [s for s in out.signals if s.kind in ("breaker", "safe_mode")] == []


def test_late_events_within_allowance_land_in_their_own_window() -> None:
    c = Controller(POLICY)
    live = traffic("bot", T0, 320, 2, 0.01, seed=1)
    outage = traffic("bot", T0 + 100, 60, 2, 0.9, seed=2)
    # the outage's results sit on a partition that lags 150 s (< allowed_lateness_s):
    # they arrive between the live results of 250-310 s
    early = [f for f in live if not (T0 + 100 <= f.ts < T0 + 160)]
    tail = [f for f in early if f.ts >= T0 + 250]
    mixed = [f for pair in zip(tail, outage, strict=False) for f in pair]
    out = play(c, [f for f in early if f.ts < T0 + 250] + mixed)
    assert transitions(out, "safe_mode", "acme/bot")[:1] == [(NORMAL, READ_ONLY)]
    signal = next(s for s in out.signals if s.kind == "safe_mode")
    assert signal.details["late_window"] is True
    assert c.clocks.late_events == 0, "within the allowance: not late"


def test_events_beyond_allowed_lateness_are_counted_at_arrival_and_in_late_events() -> None:
    c = Controller(POLICY)
    lateness = POLICY.windows.allowed_lateness_s
    live = traffic("bot", T0, lateness + 200, 2, 0.0, seed=1)
    late = traffic("bot", T0, 8, 1, 1.0, seed=2)  # 8 failures, delivered at the end
    play(c, live)
    before = c.agent_windows[("acme", "bot")][""].totals(c.clocks.clock("acme", "bot"), 60)
    play(c, late)
    after = c.agent_windows[("acme", "bot")][""].totals(c.clocks.clock("acme", "bot"), 60)
    assert c.clocks.late_events == 8 and c.counts()["late_events"] == 8
    assert after == (before[0] + 8, before[1] + 8), "counted by arrival, not dropped"


def test_a_scenario_replayed_in_the_past_is_decided_like_live_traffic() -> None:
    """healthy for 300 s, then a second scenario whose clock starts 240 s back in time
    (same agents): its outage is detected once and recovers."""
    c = Controller(POLICY)
    first = play(c, traffic("bot", T0, 300, 3, 0.005, seed=1))
    assert not first.signals
    start = T0 + 60
    second = merged(traffic("bot", start, 20, 3, 0.005, seed=2),
                    traffic("bot", start + 20, 90, 3, 0.8, seed=3),
                    traffic("bot", start + 110, 150, 3, 0.005, seed=4))
    out = play(c, second)
    assert c.clocks.rejoins == 1
    assert transitions(out, "safe_mode", "acme/bot") == [(NORMAL, READ_ONLY),
                                                         (READ_ONLY, NORMAL)]
    breaker = transitions(out, "breaker", "acme/*/crm")
    assert breaker[0] == (CLOSED, OPEN) and breaker[-1] == (HALF_OPEN, CLOSED)
    assert sum(s == (CLOSED, OPEN) for s in breaker) == 1
    entered = next(s for s in out.signals if s.kind == "safe_mode")
    assert start + 20 <= entered.ts.timestamp() <= start + 50, "signals carry agent time"


def test_source_clock_rejoin_needs_more_than_one_record() -> None:
    """One big record of a lagging partition is not a clock moved back."""
    clocks = SourceClocks(allowed_lateness_s=300, far_behind_s=60, rejoin_after_events=20)
    clocks.next_record()
    clocks.place("t", "a", T0 + 1000)
    clocks.next_record()
    for i in range(100):
        clocks.place("t", "a", T0 + i)
    assert clocks.rejoins == 0 and clocks.late_events == 100
    clocks.next_record()
    clocks.place("t", "a", T0 + 200)
    assert clocks.rejoins == 1


def test_an_outage_of_one_tool_is_not_diluted_by_the_agents_other_tools() -> None:
    """Five tools, one failing 25%: 6% of the agent's calls is no evidence of > 5%, 25% of
    that tool's calls is. Safe mode tests each tool's results too."""
    c = Controller(POLICY)
    streams = [traffic("bot", T0, 120, 1, 0.25 if tool == "crm" else 0.01, tool=tool,
                       seed=i) for i, tool in enumerate(("crm", "mail", "docs", "chat", "kb"))]
    out = play(c, merged(*streams))
    entered = [s for s in out.signals if s.kind == "safe_mode"]
    assert entered and entered[0].details["tool"] == "crm"
    calls, errors = c.agent_windows[("acme", "bot")][""].totals(T0 + 119, 60)
    assert errors < 0.1 * calls, "the agent's total alone would not have said it"


def test_a_catch_up_burst_is_not_a_clock_moving_back() -> None:
    """A partition catching up delivers minutes of an agent's results within a second of
    arrival: late, not a clock that moved back. One that keeps arriving for longer is."""
    clocks = SourceClocks(allowed_lateness_s=300, far_behind_s=60, rejoin_after_events=20,
                          rejoin_after_s=2.0)
    clocks.next_record()
    clocks.place("t", "a", T0 + 1000, arrival=100.0)
    for record in range(5):  # 5 records, 0.1 s apart
        clocks.next_record()
        for i in range(30):
            clocks.place("t", "a", T0 + record * 30 + i, arrival=100.0 + record * 0.1)
    assert clocks.rejoins == 0
    clocks.next_record()
    clocks.place("t", "a", T0 + 200, arrival=103.0)
    assert clocks.rejoins == 1, "still behind after 3 s of arrivals: it moved back"


def test_tenant_wide_evidence_adds_up_agents_on_their_own_clocks() -> None:
    """Four agents, two with clocks 15 and 10 minutes off, each at 60 calls a minute: 30 s
    of a 20 % outage of their tool are 99.99 % evidence only summed over the four (6
    failures in one agent's 60 calls are not), each agent's window read at its own
    clock; with a worker-wide clock the skewed agents' windows would be empty."""
    c = Controller(POLICY)
    skews = {"ahead": 900.0, "behind": -600.0, "a": 0.0, "b": 0.0}
    facts = []
    for k, (agent, skew) in enumerate(skews.items()):
        for i in range(60 + 30):  # a healthy minute, then 30 s of outage
            failed = i >= 60 and (i + k) % 5 == 0
            facts.append(ToolResult(T0 + i + k / 4 + skew, agent, "crm",
                                    "error" if failed else "ok", 10.0, f"{agent}-{i}", ""))
    by_true = sorted(facts, key=lambda f: f.ts - skews[f.agent])
    out = play(c, by_true)
    degraded = [s for s in out.signals if s.kind == "safe_mode" and s.state == READ_ONLY]
    assert degraded and {s.details["window"] for s in degraded} == {"tenant"}
    assert {s.scope.split("/")[1] for s in degraded} & {"ahead", "behind"}
    assert c.clocks.late_events == 0
