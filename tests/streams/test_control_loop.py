"""The control loop end to end: a real Tansu broker, a real `agentledger streams` worker,
the real SDK and guard, and (where ClickHouse is asserted) the real sink and chdb."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.producers.scenarios import OUTAGE_END_S, OUTAGE_TOOL, SimClock, run_scenario
from agentledger.schemas import topics
from agentledger.schemas.signals import CLOSED, HALF_OPEN, NORMAL, OPEN, READ_ONLY, ControlSignal
from agentledger.streams.control_policy import load_policy
from tests.conftest import CLI, consume_all
from tests.helpers import wait_for
from tests.sinkutil import SinkThread
from tests.streamutil import StreamWorker, control_records, outage_calls

pytestmark = pytest.mark.integration
POLICY = load_policy()


def _ledger_factory(bootstrap: str):
    return lambda ident, clock: Ledger.connect(bootstrap, ident, clock=clock)


def _signals(bootstrap: str, follower: ControlFollower) -> list[ControlSignal]:
    """Every non-heartbeat record on agent.control, in offset order (from a fresh read)."""
    return control_records(bootstrap)


def test_healthy_scenario_trips_nothing_and_prices_success_exactly(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower, SinkThread(settings) as sink:
        worker.wait_ready(follower)
        result = run_scenario("healthy", _ledger_factory(bootstrap), follower=follower, seed=7)
        assert result.runs > 1500 and result.end_ts - result.start_ts >= 299
        assert result.refusals == {}, "a healthy fleet is never refused"
        wait_for(lambda: follower.event_time >= result.end_ts, 30, what="decisions to catch up")
        control = [s for s in _signals(bootstrap, follower) if s.kind in ("breaker", "safe_mode")]
        assert control == [], f"healthy traffic tripped: {[(s.key, s.state) for s in control]}"

        # cost per successful task, three ways: by hand from the events on Kafka, from the
        # stream's unit-economics windows, and by SQL over ClickHouse
        events = [orjson.loads(m.value()) for m in consume_all(bootstrap, topics.EVENTS,
                                                                result.events)]
        spend = sum(e["body"].get("cost_usd") or 0 for e in events
                    if e["event_type"] == "model.call")
        successes = sum(1 for e in events if e["event_type"] == "run.finished"
                        and e["body"]["outcome"] == "success")
        by_hand = round(spend / successes, 2)

        seen: dict[str, object] = {}

        def stream_figure() -> float | None:
            rows = sink.query(
                "SELECT sum(values['spend_micros']), sum(values['successes']) FROM "
                "agentledger.metrics FINAL WHERE kind = 'unit_economics'")
            spent, won = seen["totals"] = rows[0]
            return round(spent / 1e6 / won, 2) if won == successes else None

        try:
            figure = wait_for(stream_figure, 60, what="all unit-economics windows")
        except AssertionError:
            windows = sink.query(
                "SELECT tenant, agent, subject, window_start, revision, final, "
                "values['successes'], values['runs'] FROM agentledger.metrics FINAL "
                "WHERE kind = 'unit_economics' ORDER BY window_start, tenant, agent, subject")
            raise AssertionError(
                f"stream (spend_micros, successes) {seen.get('totals')} vs by hand "
                f"{successes} successes; windows {windows}; worker log "
                f"{worker.log_path.read_text()[-4000:]}") from None
        assert figure == by_hand
        assert wait_for(lambda: sink.query("SELECT count() FROM agentledger.events FINAL")[0][0]
                        == result.events, 60, what="the sink to land every event")
        sql_rows = sink.query(
            "SELECT sumIf(cost_usd, event_type = 'model.call') / "
            "countIf(event_type = 'run.finished' AND outcome = 'success') "
            "FROM agentledger.events FINAL")
        assert round(sql_rows[0][0], 2) == by_hand


def test_tool_outage_breaker_cycle_safe_mode_and_guard(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    verdicts: list[tuple[float, bool, bool]] = []

    def observe(ts: float, sim) -> None:
        guard = SafeModeGuard(follower, "acme", "crm-agent", stale_after_s=30)
        # hubspot is not failing: only safe mode can refuse it
        verdicts.append((ts, guard.decide("hubspot", "write").allowed,
                         guard.decide("hubspot", "read").allowed))

    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower, SinkThread(settings) as sink:
        worker.wait_ready(follower)
        result = run_scenario("tool-outage", _ledger_factory(bootstrap), follower=follower,
                              seed=3, on_tick=observe)
        wait_for(lambda: follower.event_time >= result.end_ts, 30, what="decisions")
        signals = _signals(bootstrap, follower)

        breaker = [s for s in signals if s.key == f"breaker:acme/*/{OUTAGE_TOOL}"]
        states = [(s.previous_state, s.state) for s in breaker]
        assert states[0] == (CLOSED, OPEN) and states[-1] == (HALF_OPEN, CLOSED), states
        assert all(a[1] == b[0] for a, b in pairwise(states)), states
        assert [s.version for s in breaker] == list(range(1, len(breaker) + 1)), \
            "every transition once, in order"
        assert breaker[0].triggered_by and breaker[0].policy_version == POLICY.version
        assert breaker[-1].ts.timestamp() > result.start_ts + OUTAGE_END_S
        other_breakers = {s.key for s in signals if s.kind == "breaker"} - {breaker[0].key}
        assert not other_breakers, other_breakers

        safe = [s for s in signals if s.kind == "safe_mode"]
        assert [(s.scope, s.state) for s in safe] == [("acme/crm-agent", READ_ONLY),
                                                      ("acme/crm-agent", NORMAL)]
        rule = POLICY.safe_mode[0]
        assert safe[1].ts - safe[0].ts >= timedelta(seconds=rule.min_hold_s), "hysteresis"
        assert safe[1].ts.timestamp() > result.start_ts + OUTAGE_END_S

        degraded = [v for v in verdicts if not v[1]]
        assert degraded, "the guard refused writes while read-only"
        assert all(read for _, _, read in degraded), "and allowed reads"
        assert verdicts[-1][1:] == (True, True), "and allows writes again at the end"
        assert result.refusals.get("breaker_open") and result.refusals.get("safe_mode_read_only")

        # each transition is one row in ClickHouse (FINAL), as published
        def landed() -> list[tuple]:
            return sink.query(
                "SELECT kind, scope, version, state FROM agentledger.control_signals FINAL "
                "ORDER BY kind, scope, version")
        expected = sorted((s.kind, s.scope, s.version, s.state) for s in breaker + safe)
        wait_for(lambda: landed() == expected, 60, what="control_signals to match the topic")
        assert landed() == expected


def test_runaway_run_exceeds_budget_alone(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower:
        worker.wait_ready(follower)
        result = run_scenario("runaway", _ledger_factory(bootstrap), follower=follower, seed=5)
        assert result.runaway_run_id is not None
        wait_for(lambda: follower.event_time >= result.end_ts, 30, what="decisions")
        budgets = [s for s in _signals(bootstrap, follower) if s.kind == "budget"]
        assert [s.scope for s in budgets] == [f"acme/triage-bot/run/{result.runaway_run_id}"]
        assert budgets[0].fallback == POLICY.budgets.fallback
        assert "max_tool_calls 12" in budgets[0].reason
        # the runaway was stopped by its guard soon after, and no other run was refused
        assert result.refusals == {"budget_exceeded": 1}
        assert 12 < result.runaway_tool_calls < 30


def test_kill9_while_open_resumes_without_stale_transitions(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    t0 = datetime.now(UTC)
    clock = SimClock(t0)
    ident = AgentIdentity(tenant="acme", agent="crm-agent", agent_version="1",
                          principal="svc-crm")
    key = f"breaker:acme/*/{OUTAGE_TOOL}"
    with ControlFollower(bootstrap) as follower, Ledger.connect(bootstrap, ident,
                                                                clock=clock) as ledger:
        first = StreamWorker(service_env, tmp_path / "w1.log").start()
        try:
            first.wait_ready(follower)
            outage_calls(ledger, clock, t0, 25)
            try:
                wait_for(lambda: (s := follower.state.get(key)) and s.state == OPEN, 60,
                         what="the breaker to open")
            except AssertionError as exc:  # once in CI: say what the worker had counted
                beat = follower.heartbeats.get(first.worker_scope)
                raise AssertionError(f"{exc}; signals {follower.state}; worker heartbeat "
                                     f"{beat.details if beat else None}") from None
            wait_for(lambda: follower.heartbeats[first.worker_scope].details.get(
                "breakers_open") == 1, 30, what="the worker to report it")
        finally:
            first.kill9()

        with StreamWorker(service_env, tmp_path / "w2.log") as second:
            second.wait_ready(follower)
            # more failures inside the OPEN wait: ignored, no new transition
            outage_calls(ledger, clock, t0 + timedelta(seconds=10), 10)
            wait_for(lambda: follower.heartbeats[second.worker_scope].details.get(
                "event_time", 0) >= clock.timestamp() - 0.01, 60, what="the restarted worker")
            assert follower.heartbeats[second.worker_scope].details["breakers_open"] == 1, \
                "the restarted worker still reports OPEN"
            # past wait_s: the restored breaker moves on from where it was
            outage_calls(ledger, clock, t0 + timedelta(seconds=POLICY.breaker.wait_s + 15), 1, "ok")
            wait_for(lambda: follower.state[key].state == HALF_OPEN, 60,
                     what="HALF_OPEN after the wait")
            breaker = [s for s in _signals(bootstrap, follower) if s.key == key]
            assert [(s.version, s.state) for s in breaker] == [(1, OPEN), (2, HALF_OPEN)], \
                "no transition re-emitted by the restarted worker"


def test_guard_fails_closed_when_control_goes_silent(
        settings: Settings, service_env: dict[str, str], tmp_path: Path,
        identity: AgentIdentity) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    with ControlFollower(bootstrap) as follower, \
            Ledger.connect(bootstrap, identity) as ledger:
        guard = SafeModeGuard(follower, identity.tenant, identity.agent, stale_after_s=1.5)
        with StreamWorker(service_env, tmp_path / "worker.log") as worker:
            worker.wait_ready(follower)
            assert guard.decide("zendesk", "write").allowed
            worker.kill9()
            with ledger.run("ticket_triage") as run:
                verdict = wait_for(lambda: (v := guard.decide("zendesk", "write"))
                                   .rule == "control_stale" and [v], 30,
                                   what="writes refused after stale_after_s")[0]
                assert guard.check("zendesk", "write", run=run).rule == "control_stale"
                assert guard.check("zendesk", "read", run=run).allowed, "reads stay open"
                run.finish("aborted", error=verdict.reason)
        ledger.flush()
        decisions = [orjson.loads(m.value()) for m in consume_all(bootstrap, topics.EVENTS, 3)]
        denies = [e for e in decisions if e["event_type"] == "policy.decision"]
        assert denies and all(d["body"]["decision"] == "deny" and
                              d["body"]["rule"] == "control_stale" for d in denies)


def test_overrides_and_control_cli(service_env: dict[str, str], settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    run = lambda *a: subprocess.run([*CLI, *a], env=service_env, capture_output=True,  # noqa: E731
                                    text=True, timeout=60)
    done = run("safe-mode", "set", "acme/crm-agent", "--reason", "incident 42", "--json")
    assert done.returncode == 0, done.stderr
    with ControlFollower(bootstrap) as follower:
        guard = SafeModeGuard(follower, "acme", "crm-agent", stale_after_s=3600)
        wait_for(lambda: guard.mode == READ_ONLY, 30, what="the override to reach the guard")
        assert not guard.decide("salesforce", "write") and guard.decide("salesforce", "read")
        shown = run("control", "--json")
        assert shown.returncode == 0, shown.stderr
        rows = orjson.loads(shown.stdout)
        assert [(r["kind"], r["scope"], r["state"], r["reason"]) for r in rows] == [
            ("override", "acme/crm-agent", "read_only", "incident 42")]
        assert run("safe-mode", "clear", "acme/crm-agent", "--reason", "fixed").returncode == 0
        wait_for(lambda: guard.mode == NORMAL, 30, what="the clear to reach the guard")
    bad = run("safe-mode", "set", "not-a-scope", "--reason", "x")
    assert bad.returncode == 1 and "TENANT/AGENT" in bad.stderr and "Traceback" not in bad.stderr


def test_broken_policy_is_refused_at_start(service_env: dict[str, str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "x"\nbreaker:\n  failure_rate_threshold: 1.5\n')
    done = subprocess.run([*CLI, "streams", "--policy", str(policy)], env=service_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{policy}:3: breaker.failure_rate_threshold" in done.stderr
    assert "Traceback" not in done.stderr
