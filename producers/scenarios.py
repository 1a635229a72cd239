"""Scripted simulations in event time: ``healthy``, ``tool-outage``, ``runaway``.

Minutes of agent traffic run in seconds: a :class:`SimClock` stamps events, and time
moves in ticks. With a :class:`~agentledger.producers.guard.ControlFollower` the run is *lockstep*:
after each tick the driver waits (bounded) until the stream workers' heartbeats say they
have decided up to that tick's event time, so agents see the control loop's verdicts at
the same event time they would in real life, however slow or loaded the machine is.

- ``healthy``: every tool fails 0.5% of the time. Nothing should trip.
- ``tool-outage``: ``salesforce`` fails 80% from 20 s to 110 s, then recovers. Its breaker
  opens, the CRM agent degrades to read-only; after recovery the breaker probes and
  closes, and safe mode exits once the window has cooled and the hold time passed.
- ``runaway``: healthy traffic plus one run that loops on tool calls past its budget
  (``max_tool_calls=12``) until its guard refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from agentledger.producers.context import RunContext
from agentledger.producers.emitter import Ledger
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.producers.identity import AgentIdentity
from agentledger.producers.simulator import Simulator

log = logging.getLogger(__name__)


class SimClock:
    """Event time for simulated agents. Each reading moves it on by one millisecond, so the
    events of a run are strictly ordered in time as they are in ``seq``."""

    def __init__(self, start: datetime | None = None):
        self.t = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(milliseconds=1)
        return self.t

    def set(self, t: datetime) -> None:
        self.t = max(self.t, t)

    def timestamp(self) -> float:
        return self.t.timestamp()


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    runs_per_s: float
    failure_rate: Callable[[str, float], float]
    description: str
    runaway_at_s: float | None = None
    tenants: tuple[str, ...] = ("acme",)


OUTAGE_TOOL = "salesforce"
OUTAGE_START_S = 20.0
OUTAGE_END_S = 110.0
BASE_ERROR_RATE = 0.005


def _scenarios(t0: float) -> dict[str, Scenario]:
    def healthy(tool: str, ts: float) -> float:
        return BASE_ERROR_RATE

    def outage(tool: str, ts: float) -> float:
        if tool == OUTAGE_TOOL and OUTAGE_START_S <= ts - t0 < OUTAGE_END_S:
            return 0.8
        return BASE_ERROR_RATE

    return {
        "healthy": Scenario("healthy", 300, 6, healthy, "0.5% tool errors everywhere"),
        "tool-outage": Scenario(
            "tool-outage", 260, 6, outage,
            f"{OUTAGE_TOOL} fails 80% from {OUTAGE_START_S:g}s to {OUTAGE_END_S:g}s"),
        "runaway": Scenario("runaway", 90, 4, healthy,
                            "one run loops on tool calls past max_tool_calls", runaway_at_s=20),
    }


SCENARIOS = tuple(_scenarios(0))


@dataclass
class ScenarioResult:
    scenario: str
    runs: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    denials: dict[str, int] = field(default_factory=dict)
    start_ts: float = 0.0
    end_ts: float = 0.0
    lockstep_timeouts: int = 0
    runaway_run_id: str | None = None
    runaway_tool_calls: int = 0
    ticks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "ticks"}


def _caught_up(follower: ControlFollower, target: float) -> bool:
    """Has the control loop's event time reached ``target`` (lockstep)?"""
    return follower.event_time >= target


def run_scenario(
    name: str,
    make_ledger: Callable[[AgentIdentity, SimClock], Ledger],
    *,
    follower: ControlFollower | None = None,
    seed: int = 0,
    tick_s: float = 2.0,
    start: datetime | None = None,
    stale_after_s: float = 30.0,
    lockstep_timeout_s: float = 15.0,
    on_tick: Callable[[float, Simulator], dict[str, Any] | None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScenarioResult:
    """Play scenario ``name``; returns what happened (outcomes, refusals, time span)."""
    clock = SimClock(start)
    t0 = clock.timestamp()
    try:
        scenario = _scenarios(t0)[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
                         ) from None
    guard_for = None
    if follower is not None:
        def guard_for(tenant: str, agent: str) -> SafeModeGuard:
            return SafeModeGuard(follower, tenant, agent, stale_after_s=stale_after_s)

    sim = Simulator(lambda ident: make_ledger(ident, clock), seed=seed,
                    failure_rate=scenario.failure_rate, guard_for=guard_for,
                    tenants=scenario.tenants)
    result = ScenarioResult(scenario=name, start_ts=t0)
    delivered_before = 0
    runaway: RunContext | None = None
    n = 0
    ticks = int(scenario.duration_s / tick_s)
    per_tick = scenario.runs_per_s * tick_s
    carry = 0.0
    for k in range(ticks):
        tick_start = t0 + k * tick_s
        carry += per_tick
        count, carry = int(carry), carry - int(carry)
        for i in range(count):
            clock.set(datetime.fromtimestamp(tick_start + i * tick_s / max(count, 1), UTC))
            outcome = sim.one_run(n)
            n += 1
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        if scenario.runaway_at_s is not None and k * tick_s >= scenario.runaway_at_s:
            runaway = _runaway_step(sim, runaway, result)
        for ledger in sim.ledgers():
            ledger.flush()
        if follower is not None:
            target = clock.timestamp()
            if not follower.wait_for(partial(_caught_up, follower, target),
                                     lockstep_timeout_s):
                result.lockstep_timeouts += 1
                log.warning("stream workers behind", extra={"tick": k, "target": target})
        if on_tick is not None:
            seen = on_tick(tick_start + tick_s, sim)
            if seen is not None:
                result.ticks.append(seen)
        if progress:
            progress(1)
    if runaway is not None and not runaway.finished:
        runaway.__exit__(None, None, None)
    for ledger in sim.ledgers():
        ledger.flush()
    result.runs = n + (1 if result.runaway_run_id else 0)
    result.events = sum(ledger.delivered for ledger in sim.ledgers()) - delivered_before
    result.refusals = dict(sim.refusals)
    result.denials = dict(sim.denials)
    result.end_ts = clock.timestamp()
    return result


RUNAWAY_MAX_TOOL_CALLS = 12
RUNAWAY_CALLS_PER_TICK = 2
RUNAWAY_CALL_LIMIT = 60


def _runaway_step(sim: Simulator, run: RunContext | None,
                  result: ScenarioResult) -> RunContext | None:
    """Advance the looping run by a few tool calls; it stops only when refused."""
    if run is None:
        ledger = sim.ledger("acme", "triage-bot")
        run = ledger.run("ticket_triage", inputs={"loop": True}, input_ref="s3://in/loop",
                         prompt_template="ticket_triage", prompt_version="7",
                         policy_version="12", max_cost_usd=5.0,
                         max_tool_calls=RUNAWAY_MAX_TOOL_CALLS)
        run.__enter__()
        result.runaway_run_id = run.run_id
    if run.finished:
        return run
    guard = sim.guard("acme", "triage-bot")
    for _ in range(RUNAWAY_CALLS_PER_TICK):
        if result.runaway_tool_calls >= RUNAWAY_CALL_LIMIT:
            run.finish("aborted", error="runaway loop hit the simulator's own limit")
            run.__exit__(None, None, None)
            return run
        if guard is not None:
            verdict = guard.check("zendesk", "read", run=run, action="search_tickets")
            if not verdict.allowed:
                sim.refusals[verdict.rule] = sim.refusals.get(verdict.rule, 0) + 1
                run.finish("aborted", error=f"refused by the control loop: {verdict.rule}")
                run.__exit__(None, None, None)
                return run
        with run.tool_call("zendesk", "search_tickets", mode="read",
                           args={"q": f"loop {result.runaway_tool_calls}"},
                           tool_version="2.3.1") as call:
            call.result("ok", latency_ms=80.0)
        result.runaway_tool_calls += 1
    return run
