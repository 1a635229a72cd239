"""Decisions ops can trust, end to end: a real Tansu broker and a real stream worker.

No trips on the demo's background noise; an outage on a stack that already ran a scenario
(its events lie behind what the worker saw) is detected once and recovers; agents with
clocks 10 minutes off are decided like the others; late events are counted, not dropped.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.scenarios import OUTAGE_TOOL, SimClock, run_scenario
from agentledger.producers.simulator import Simulator
from agentledger.schemas.signals import CLOSED, HALF_OPEN, NORMAL, OPEN, READ_ONLY, ControlSignal
from agentledger.streams.control_policy import load_policy
from tests.helpers import wait_for
from tests.streamutil import StreamWorker, control_records

pytestmark = pytest.mark.integration
POLICY = load_policy()


def _signals(bootstrap: str) -> list[ControlSignal]:
    """Every breaker / safe-mode record on agent.control so far, in offset order."""
    return control_records(bootstrap, lambda s: s.kind in ("breaker", "safe_mode"))


def _decided(follower: ControlFollower, worker: StreamWorker, ts: float) -> None:
    wait_for(lambda: (h := follower.heartbeats.get(worker.worker_scope)) is not None
             and h.details.get("event_time", 0) >= ts - 0.01, 60, what="decisions to catch up")


def test_noise_trips_nothing_and_a_second_scenario_in_the_past_trips_once(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    factory = lambda ident, clock: Ledger.connect(bootstrap, ident, clock=clock)  # noqa: E731
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower:
        worker.wait_ready(follower)
        # the demo: 300 plain runs at 2% tool errors (wall clock, as fast as possible) ...
        plain = Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=0,
                          error_rate=0.02)
        done = plain.run(300)
        assert done.runs == 300
        # ... then the healthy scenario: neither may trip anything
        healthy = run_scenario("healthy", factory, follower=follower, seed=11)
        _decided(follower, worker, healthy.end_ts)
        tripped = _signals(bootstrap)
        assert tripped == [], [(s.key, s.state, s.reason) for s in tripped]

        # a second scenario on the same stack, started "in the past": its event times lie
        # 4 minutes behind the end of the healthy one, which the worker has decided
        past = datetime.fromtimestamp(healthy.start_ts + 60, UTC)
        outage = run_scenario("tool-outage", factory, follower=follower, seed=12,
                              start=past)
        _decided(follower, worker, outage.end_ts)
        signals = _signals(bootstrap)
        breaker = [(s.previous_state, s.state) for s in signals
                   if s.key == f"breaker:acme/*/{OUTAGE_TOOL}"]
        assert breaker.count((CLOSED, OPEN)) == 1, breaker
        assert breaker[-1] == (HALF_OPEN, CLOSED), breaker
        safe = [(s.scope, s.state) for s in signals if s.kind == "safe_mode"]
        assert safe == [("acme/crm-agent", READ_ONLY), ("acme/crm-agent", NORMAL)], safe
        other = {s.key for s in signals if s.kind == "breaker"} - {
            f"breaker:acme/*/{OUTAGE_TOOL}"}
        assert not other, other
        assert outage.refusals.get("breaker_open"), "the guards saw the open breaker"
        beat = follower.heartbeats[worker.worker_scope].details
        assert beat["clock_rejoins"] >= 1, "the agents' clocks moved back and were rejoined"


def _emit(ledger: Ledger, clock: SimClock, at: datetime, failed: bool, i: int) -> None:
    clock.set(at)
    with ledger.run("crm_update") as run, run.tool_call(
            OUTAGE_TOOL, "get_account", mode="read", args={"id": i}) as call:
        call.result("error" if failed else "ok",
                    error_type="HTTP500" if failed else None, latency_ms=30.0)


def test_agents_with_clocks_ten_minutes_off_are_detected(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    now = datetime.now(UTC)
    skews = {"behind": -600.0, "ontime": 0.0, "ahead": 600.0}
    clocks = {a: SimClock(now + timedelta(seconds=s)) for a, s in skews.items()}
    rng = random.Random(5)
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower:
        worker.wait_ready(follower)
        ledgers = {a: Ledger.connect(bootstrap, AgentIdentity(
            tenant="acme", agent=f"crm-{a}", agent_version="1", principal="svc"),
            clock=clocks[a]) for a in skews}
        try:
            # 40 s healthy, 60 s at 80% errors, 120 s healthy; 2 calls a second each,
            # produced in true-time order across the three agents, 5 s at a time (live
            # traffic, not one burst per partition)
            for i in range(440):
                t = i * 0.5
                for agent, skew in skews.items():
                    fail = rng.random() < (0.8 if 40 <= t < 100 else 0.005)
                    _emit(ledgers[agent], clocks[agent],
                          now + timedelta(seconds=t + skew), fail, i)
                if i % 10 == 9:
                    for ledger in ledgers.values():
                        ledger.flush()
                    _decided(follower, worker, clocks["ahead"].timestamp())
        finally:
            for ledger in ledgers.values():
                ledger.close()
        rule = POLICY.safe_mode[0].name

        def recovered() -> bool:
            got = [follower.get("safe_mode", f"acme/crm-{a}", rule) for a in skews]
            return all(s is not None and s.state == NORMAL for s in got)

        wait_for(recovered, 90, what="each agent's outage detected and recovered")
        signals = _signals(bootstrap)
        for agent in skews:
            states = [s.state for s in signals if s.scope == f"acme/crm-{agent}"]
            assert states == [READ_ONLY, NORMAL], (agent, states)
            entered = next(s for s in signals if s.scope == f"acme/crm-{agent}")
            # the signal carries the agent's own clock
            start = now.timestamp() + skews[agent]
            assert start + 40 <= entered.ts.timestamp() <= start + 100
        breaker = [s.state for s in signals if s.kind == "breaker"]
        assert breaker.count(OPEN) >= 1 and breaker[-1] == CLOSED, breaker
        assert follower.heartbeats[worker.worker_scope].details["late_events"] == 0


def test_late_events_are_counted_and_reported(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    """A partition that lags more than allowed_lateness_s: its results still count (at
    arrival) and the worker's heartbeat says how many were late."""
    bootstrap = settings.kafka_bootstrap or ""
    start = datetime.now(UTC)
    clock = SimClock(start)
    lateness = POLICY.windows.allowed_lateness_s
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower, \
            Ledger.connect(bootstrap, AgentIdentity(
                tenant="acme", agent="lagging", agent_version="1", principal="svc"),
                clock=clock) as ledger:
        worker.wait_ready(follower)
        for i in range(lateness + 60):  # live traffic, one call a second
            _emit(ledger, clock, start + timedelta(seconds=i), False, i)
            if i % 5 == 4:
                # delivered as it happens, a few seconds at a time: sent in one burst (one
                # 50 ms producer batch per partition), a partition's 6 minutes would be
                # read before another's, whose first minute is then rightly late
                ledger.flush()
            if i % 30 == 29:
                # ... and read as it happens: a worker that falls a whole fetch behind the
                # test (a busy CI machine) reads a backlog partition by partition, and one
                # partition's 5 minutes ahead of another's is lateness the test did not mean
                _decided(follower, worker, clock.timestamp())
        ledger.flush()
        _decided(follower, worker, clock.timestamp())
        assert follower.heartbeats[worker.worker_scope].details["late_events"] == 0
        # the lagging partition delivers 12 results from the first 12 seconds
        clock.t = start
        late = 12
        for i in range(late):
            _emit(ledger, clock, start + timedelta(seconds=i + 0.5), True, 10_000 + i)
        ledger.flush()
        wait_for(lambda: follower.heartbeats[worker.worker_scope].details.get("late_events")
                 == late, 60, what="late_events to count the late results")
