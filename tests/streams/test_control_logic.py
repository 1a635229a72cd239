"""The control loop's pure logic, exhaustively, with no Kafka in sight."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from agentledger.schemas.signals import (
    CLEARED,
    CLOSED,
    HALF_OPEN,
    NORMAL,
    OPEN,
    READ_ONLY,
    ControlSignal,
)
from agentledger.streams.breaker import Breaker
from agentledger.streams.budgets import RunState, to_micros
from agentledger.streams.control_policy import BreakerPolicy, PolicyError, load_policy, parse_policy
from agentledger.streams.decide import Controller
from agentledger.streams.economics import Economics
from agentledger.streams.facts import ToolResult
from agentledger.streams.fold import RunFolder
from agentledger.streams.safemode import SafeMode
from agentledger.streams.stats import critical_failures, lower_bound, upper_tail
from agentledger.streams.windows import CountWindow, p95

POLICY = load_policy()


def breaker(**kw: float) -> Breaker:
    return Breaker(BreakerPolicy(**kw), window_s=60, hop_s=5)


def test_breaker_opens_only_with_min_calls_and_rate() -> None:
    b = breaker(min_calls=20, failure_rate_threshold=0.5)
    for i in range(19):
        assert b.record(1000 + i * 0.1, failed=True, event_id=f"e{i}") is None
    t = b.record(1002, failed=True, event_id="e19")
    assert t is not None and (t.previous, t.state, t.version) == (CLOSED, OPEN, 1)
    assert "e19" in t.triggered_by and len(t.triggered_by) <= 20


def test_breaker_stays_closed_below_threshold() -> None:
    b = breaker(min_calls=20, failure_rate_threshold=0.5)
    for i in range(100):
        assert b.record(1000 + i, failed=i % 3 == 0) is None  # 34% failures
    assert b.state == CLOSED


def test_breaker_window_forgets_old_failures() -> None:
    b = breaker(min_calls=4, failure_rate_threshold=0.5)
    for i in range(3):
        b.record(1000 + i, failed=True)
    # 70 s later the three failures are out of the 60 s window: one failure is 1 of 2
    b.record(1070, failed=False)
    assert b.record(1071, failed=True) is None and b.state == CLOSED


def test_breaker_full_cycle_half_open_then_closed_or_open() -> None:
    b = breaker(min_calls=2, wait_s=30, probe_calls=3)
    b.record(1000, failed=True)
    assert b.record(1000.5, failed=True).state == OPEN
    assert b.record(1010, failed=True) is None, "results while OPEN are ignored"
    assert b.advance(1029) is None
    t = b.advance(1030.5)
    assert (t.previous, t.state, t.version) == (OPEN, HALF_OPEN, 2)
    # half-open: a sequential test (10% "recovered" vs 50% "failing", 99.9% sure)
    for i in range(4):
        assert b.record(1031 + i, failed=True) is None, "undecided yet"
    t = b.record(1035, failed=True)
    assert (t.state, t.version) == (OPEN, 3), "5 of 5 probes failed"
    assert dict(t.details)["rule_kind"] == "half_open_sprt"
    assert b.advance(1064) is None, "the wait restarts from the failed probe"
    assert b.advance(1065).state == HALF_OPEN
    for i in range(11):
        assert b.record(1066 + i, failed=False) is None
    t = b.record(1077, failed=False)
    assert (t.state, t.version) == (CLOSED, 5), "12 passing probes close it"
    assert not b.subs, "closing resets the window"


def test_half_open_does_not_flap_closed_on_an_outage_at_the_threshold() -> None:
    """A tool failing exactly at the 50% threshold must keep the breaker open: the probe
    test closes it at most 1 cycle in 1,000 (probe_confidence)."""
    import random

    rng = random.Random(3)
    closed = 0
    for _cycle in range(300):
        b = breaker(min_calls=1, wait_s=1)
        b.record(0, failed=True)
        b.advance(2)
        t = None
        for i in range(60):
            t = b.record(3 + i * 0.01, failed=rng.random() < 0.5)
            if t is not None:
                break
        closed += t is not None and t.state == CLOSED
    assert closed <= 3
    healthy = breaker(min_calls=1, wait_s=1)
    healthy.record(0, failed=True)
    healthy.advance(2)
    outcomes = [healthy.record(3 + i, failed=i == 4) for i in range(30)]
    assert next(t for t in outcomes if t is not None).state == CLOSED


def test_breaker_snapshot_round_trip() -> None:
    b = breaker(min_calls=1)
    b.record(1000, failed=True)
    other = breaker(min_calls=1)
    other.restore(b.snapshot())
    assert (other.state, other.version, other.opened_at) == (OPEN, 1, 1000)
    assert other.advance(1031).version == 2


def test_safe_mode_hysteresis() -> None:
    rule = POLICY.safe_mode[0]  # significant evidence of > 5% enters; <= 4% and 60 s exits
    mode = SafeMode(rule, 60)
    w = CountWindow(5, 400)
    for i in range(40):
        w.add(1000 + i * 0.5, i % 4 == 0)  # 25% of 40 calls: far beyond noise
    t = mode.enter_if(1020, 0.0, w)
    assert t is not None and (t.previous, t.state) == (NORMAL, READ_ONLY)
    assert dict(t.details)["lower_bound"] > rule.when.tool_error_rate_gt
    assert mode.enter_if(1021, 0.0, w) is None, "no re-entry"
    # still evidence of a rate over exit_below (4%): stays degraded
    w2 = CountWindow(5, 400)
    for i in range(200):
        w2.add(1100 + i * 0.1, i % 10 == 0)  # 10%
    assert mode.exit_if(1110, 0.0, w2) is None
    # one error in 16 calls (6%) is no evidence of > 4%: a small agent may leave
    w4 = CountWindow(5, 400)
    for i in range(16):
        w4.add(1100 + i * 3, i == 7)
    small = SafeMode(rule, 60)
    small.restore({"state": READ_ONLY, "version": 1, "since": 1000.0})
    assert small.exit_if(1149, 0.0, w4) is not None
    # clean window but held < 60 s: stays
    w3 = CountWindow(5, 400)
    w3.add(1070, False)
    assert mode.exit_if(1075, 0.0, w3) is None
    t = mode.exit_if(1081, 0.0, w3)
    assert t is not None and (t.state, t.version) == (NORMAL, 2)


def test_safe_mode_ignores_small_sample_noise() -> None:
    """The demo's false degradation: 2 failures in 21-33 calls at 2% background errors
    crossed 5% over min_calls 20. Significance, not the raw rate, decides now."""
    rule = POLICY.safe_mode[0]
    for calls, failures in ((21, 2), (33, 2), (20, 3), (5, 1), (60, 5)):
        mode = SafeMode(rule, 60)
        w = CountWindow(5, 400)
        for i in range(calls):
            w.add(1000 + i * 50 / calls, i < failures)
        assert mode.enter_if(1050, 0.0, w) is None, (calls, failures)
    # a real outage on the same volumes still trips
    mode = SafeMode(rule, 60)
    w = CountWindow(5, 400)
    for i in range(30):
        w.add(1000 + i, i % 2 == 0)
    assert mode.enter_if(1030, 0.0, w) is not None


def test_exact_test_bounds_false_trips_by_construction() -> None:
    """P(X >= critical | n, threshold) <= alpha for every n, and the critical count is the
    smallest such: the bound the policy's confidence promises."""
    for n in (1, 5, 20, 21, 60, 500, 5000):
        x = critical_failures(n, 0.05, 1e-4)
        assert upper_tail(x, n, 0.05) <= 1e-4
        if x > 1:
            assert upper_tail(x - 1, n, 0.05) > 1e-4
    assert critical_failures(5, 0.05, 1e-4) == 4
    assert 0.05 < lower_bound(10, 30, 1e-4) < 10 / 30


def test_long_window_catches_a_small_agent_only_while_it_fails_now() -> None:
    rule = POLICY.safe_mode[0]
    assert rule.when.long_window_s == 300
    w = CountWindow(5, 700)
    for i in range(25):  # 5 calls a minute for 5 minutes, 40% failing
        w.add(1000 + i * 12, i % 5 < 2)
    mode = SafeMode(rule, 60)
    hit = mode.entering(1299, w)
    assert hit is not None and hit[0] == "long"
    for i in range(5):  # recovered: the last minute is clean, the long window is not
        w.add(1300 + i * 12, False)
    assert mode.entering(1359, w) is None
    # degraded then recovered: a noisy minute right after must not re-enter on the old
    # outage still in the long window
    assert mode.enter_if(1299, 0.0, w) is not None
    assert mode.exit_if(1359, 0.0, w) is not None
    w.add(1362, True)
    assert mode.entering(1365, w) is None, "the evidence before the exit was used already"


def test_budget_exceeded_once_per_run() -> None:
    folder = RunFolder(POLICY)
    events = [_event("run.started", "r1", 0, {"workflow": "w", "budget": {
        "max_cost_usd": None, "max_tool_calls": 2}})]
    events += [_event("tool.call", "r1", i + 1, {"tool": "x"}) for i in range(5)]
    events += [_event("run.started", "r2", 0, {"workflow": "w", "budget": {
        "max_cost_usd": 0.01, "max_tool_calls": None}}),
        _event("model.call", "r2", 1, {"cost_usd": 0.004}),
        _event("model.call", "r2", 2, {"cost_usd": 0.006})]  # exactly at budget: within
    out = folder.fold([_raw(e) for e in events])
    assert [s.scope for s in out.signals] == ["acme/bot/run/r1"]
    assert "tool calls 3 > max_tool_calls 2" in out.signals[0].reason
    assert out.signals[0].fallback == POLICY.budgets.fallback
    again = folder.fold([_raw(_event("tool.call", "r1", 9, {"tool": "x"}))])
    assert again.signals == [], "told once"
    restored = RunFolder(POLICY)
    restored.restore((k, v) for k, v in out.runs_changed.items() if v)
    assert restored.fold([_raw(_event("tool.call", "r1", 10, {"tool": "x"}))]).signals == []


def test_fold_skips_garbage_and_keeps_going() -> None:
    folder = RunFolder(POLICY)
    out = folder.fold([b"not json", b"{}", _raw(_event("tool.result", "r", 1, {
        "tool": "t", "status": "error", "latency_ms": 5, "error_type": "HTTP500"}))])
    assert out.skipped == 2 and len(out.facts["acme"]) == 1


def test_economics_cost_per_success_is_exact() -> None:
    eco = Economics(60)
    costs = [0.1234567, 0.2, 0.0000011, 0.3]
    w = eco.window("acme", "bot", "wf", 1000)
    for c in costs:
        w.add("spend_micros", to_micros(c))
    for outcome in ("success", "failure", "success", "aborted"):
        w.finished(outcome)
    values = w.values()
    assert values["spend_micros"] == sum(to_micros(c) for c in costs)
    assert values["cost_per_success_usd"] == pytest.approx(sum(costs) / 2, abs=1e-6)
    assert values["success_rate"] == 0.5
    assert eco.close_until(1019) == []
    closed = eco.close_until(1020)
    assert len(closed) == 1 and closed[0].final
    assert eco.close_until(1030) == [], "published final once"
    eco.window("acme", "bot", "wf", 1001).finished("success")  # a late fact
    late = eco.close_until(1040)
    assert [(m.revision, m.final, m.values["successes"]) for m in late] == [(2, True, 3.0)]
    assert eco.close_until(1000 + 60 * 11) == [] and eco.windows == {}


def test_controller_routes_results_to_breaker_and_safe_mode() -> None:
    c = Controller(POLICY)
    facts = [ToolResult(1000 + i * 0.1, "crm", "salesforce", "error", 10.0, f"e{i}", "HTTP500")
             for i in range(25)]
    out = c.apply("acme", facts)
    kinds = sorted((s.kind, s.state) for s in out.signals)
    assert kinds == [("breaker", OPEN), ("safe_mode", READ_ONLY)]
    assert {key for _, _, key, _ in out.state} == {
        "breaker:acme/*/salesforce", "safe_mode:acme/crm:agent-tool-errors"}
    later = c.advance(1000 + POLICY.breaker.wait_s + 5)
    assert [(s.kind, s.state, s.version) for s in later.signals] == [("breaker", HALF_OPEN, 2)]


def test_forgotten_tenants_are_no_longer_decided_here() -> None:
    c = Controller(POLICY)
    for tenant in ("acme", "globex"):
        c.apply(tenant, [ToolResult(1000 + i * 0.1, "crm", "salesforce", "error", 10.0,
                                    f"e{i}", "HTTP500") for i in range(25)])
    c.forget({"acme"})  # its facts partition moved to another worker
    later = c.advance(1000 + POLICY.breaker.wait_s + 5)
    assert [s.scope for s in later.signals] == ["globex/*/salesforce"]
    assert c.counts()["breakers_open"] == 0 and c.counts()["safe_modes_active"] == 1


def test_p95_nearest_rank() -> None:
    assert p95([]) == 0.0
    assert p95(list(range(1, 101))) == 95
    assert p95([7.0]) == 7.0


def test_policy_errors_name_line_and_reason(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"p\.yaml:6: safe_mode\.0\.when\.tool_error_rate_gt"):
        parse_policy('version: "1"\nsafe_mode:\n  - name: r\n    action: halt\n'
                     '    when:\n      tool_error_rate_gt: 2\n', "p.yaml")
    with pytest.raises(PolicyError, match=r"p\.yaml:3: safe_mode\.0: .*exit_below must be lower"):
        parse_policy('version: "1"\nsafe_mode:\n  - name: r\n    when: {tool_error_rate_gt: 0.1}\n'
                     '    exit_below: 0.2\n', "p.yaml")
    with pytest.raises(PolicyError, match=r"p\.yaml:4: not valid YAML"):
        parse_policy('version: "1"\nbreaker: {\n  wait_s: [\n', "p.yaml")
    with pytest.raises(PolicyError, match=r"unknown\.yaml: cannot read"):
        load_policy(tmp_path / "unknown.yaml")
    with pytest.raises(PolicyError, match="bogus"):
        parse_policy('version: "1"\nbogus: 1\n', "p.yaml")
    with pytest.raises(PolicyError, match="tenant_window_s must be a multiple"):
        parse_policy('version: "1"\nsafe_mode:\n  - name: r\n    when:\n'
                     '      tool_error_rate_gt: 0.1\n      tenant_window_s: 90\n', "p.yaml")


class _Follower:
    """The guard's view of a follower: state by key, how long the topic was silent."""

    topic = "agent.control"

    def __init__(self) -> None:
        self.state: dict[str, ControlSignal] = {}
        self.silent_for = 0.0

    def get(self, kind: str, scope: str, rule: str = "") -> ControlSignal | None:
        from agentledger.schemas.signals import control_key

        return self.state.get(control_key(kind, scope, rule))

    def put(self, **kw: object) -> None:
        from datetime import UTC, datetime

        signal = ControlSignal(ts=datetime.now(UTC), version=1, **kw)  # type: ignore[arg-type]
        self.state[signal.key] = signal


def test_guard_precedence() -> None:
    from agentledger.producers.guard import SafeModeGuard

    f = _Follower()
    g = SafeModeGuard(f, "acme", "crm", stale_after_s=5)  # type: ignore[arg-type]
    assert g.decide("salesforce", "write").allowed
    f.put(kind="safe_mode", scope="acme/crm", rule="r", state=READ_ONLY, reason="errors")
    assert not g.decide("hubspot", "write") and g.decide("hubspot", "read")
    assert g.decide("hubspot", "write").rule == "safe_mode_read_only" and g.mode == READ_ONLY
    f.put(kind="breaker", scope="acme/*/salesforce", state=OPEN, reason="50%")
    assert g.decide("salesforce", "read").rule == "breaker_open"
    f.put(kind="override", scope="acme/crm", state="normal", reason="ops says fine")
    assert g.decide("hubspot", "write").allowed, "a manual normal pins the agent"
    f.put(kind="override", scope="acme/crm", state=CLEARED, reason="back to rules")
    assert not g.decide("hubspot", "write")
    f.put(kind="budget", scope="acme/crm/run/r1", state="exceeded", reason="cost",
          fallback="ask_user_to_confirm")
    assert g.decide("zendesk", "read", run_id="r1").rule == "budget_exceeded"
    assert g.decide("zendesk", "read", run_id="r2").allowed
    f.silent_for = 6
    assert g.decide("zendesk", "write").rule == "control_stale"
    assert g.decide("zendesk", "read").allowed, "reads stay open by default"


def _event(etype: str, run_id: str, seq: int, body: dict) -> dict:
    return {"event_type": etype, "run_id": run_id, "seq": seq, "tenant": "acme", "agent": "bot",
            "event_id": f"{run_id}-{seq}", "ts": "2026-11-24T12:00:00.000000+00:00",
            "body": body}


def _raw(event: dict) -> bytes:
    import orjson

    return orjson.dumps(event)


def test_run_state_round_trip() -> None:
    state = RunState("acme", "bot", "wf", 10, 2, cost_micros=5, tool_calls=1,
                     exceeded=True)  # every field non-default: snapshot must carry each
    assert RunState.restore(state.snapshot()) == state
    assert time.time() > 0


def test_policy_accepts_and_ignores_a_tool_catalogue() -> None:
    """OTel intake keeps tenant -> tool -> read|write in the same file; the decisions do not
    use it, but the policy must still load (and refuse a malformed one)."""
    text = ('version: "1"\ntool_catalogue:\n  acme:\n    salesforce: write\n'
            '    zendesk: read\n')
    policy = parse_policy(text, "p.yaml")
    assert policy.tool_catalogue == {"acme": {"salesforce": "write", "zendesk": "read"}}
    assert Controller(policy).apply("acme", []).signals == []
    with pytest.raises(PolicyError, match=r"p\.yaml:4: tool_catalogue\.acme\.salesforce"):
        parse_policy('version: "1"\ntool_catalogue:\n  acme:\n    salesforce: delete\n',
                     "p.yaml")


def test_facts_round_trip_the_wire_compactly() -> None:
    from agentledger.streams.facts import Override, RunFinished, Spend, ToolCall, from_wire, to_wire

    facts = [ToolResult(1.5, "bot", "crm", "error", 12.0, "e1", "HTTP500"),
             Spend(2.0, "bot", "wf", 1200), RunFinished(3.0, "bot", "wf", "success"),
             ToolCall(4.0, "bot", "wf"), Override(4.0, "bot", "wf")]
    wire = orjson.loads(orjson.dumps([to_wire(f) for f in facts]))
    assert wire[1] == ["c", 2.0, "bot", "wf", 1200], "a tag, then the fields in order"
    decoded = [from_wire(row) for row in wire]
    # same fields, other kinds: tuples compare equal, so the kinds are checked too
    assert decoded == facts and [type(f) for f in decoded] == [type(f) for f in facts]
    with pytest.raises(KeyError):
        from_wire(["?", 1.0, "bot"])
