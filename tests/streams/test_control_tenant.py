"""Safe mode's tenant-wide window (``when.tenant_window_s``): an agent failing on a tool
is judged with every caller of that tool in its tenant, on the way in and on the way out.
Pure decision code, no Kafka."""

from __future__ import annotations

from agentledger.schemas.signals import NORMAL, READ_ONLY, ControlSignal
from agentledger.streams.control_policy import load_policy, parse_policy
from agentledger.streams.decide import Controller
from agentledger.streams.facts import ToolResult
from agentledger.streams.safemode import SafeMode
from agentledger.streams.windows import CountWindow

POLICY = load_policy()


def _tenant_outage(c: Controller, agents: int, seconds: int, fail_every: int,
                   start: float = 1000.0) -> list[ControlSignal]:
    """``agents`` agents of one tenant, one call a second each to "crm", every
    ``fail_every``-th call failing (staggered so no agent's own window stands out)."""
    signals: list[ControlSignal] = []
    for sec in range(seconds):
        facts = [ToolResult(start + sec + a / agents, f"a{a}", "crm",
                            "error" if (sec + a) % fail_every == 0 else "ok", 10.0,
                            f"e{sec}-{a}", "") for a in range(agents)]
        signals += c.apply("acme", facts).signals
    return signals


def test_tenant_window_sees_an_outage_no_single_agent_can_show_yet() -> None:
    """A 20 % outage seen by five agents at 60 calls a minute: 12 s in, none of them alone
    is 99.99 % evidence of > 5 % (2-3 failures in 12 calls), the five together are."""
    assert POLICY.safe_mode[0].when.tenant_window_s == 30
    degraded = [s for s in _tenant_outage(Controller(POLICY), 5, 12, 5)
                if s.kind == "safe_mode" and s.state == READ_ONLY]
    assert degraded, "the tenant's callers together are evidence"
    assert {s.details["window"] for s in degraded} == {"tenant"}
    assert all(s.details["tool"] == "crm" and s.details["calls"] > 12 for s in degraded)
    assert degraded[0].reason.endswith("on crm, tenant-wide")
    alone = parse_policy(
        'version: "t"\nsafe_mode:\n  - name: agent-tool-errors\n    when:\n'
        '      tool_error_rate_gt: 0.05\n      long_window_s: 300\n', "p.yaml")
    assert not [s for s in _tenant_outage(Controller(alone), 5, 12, 5)
                if s.kind == "safe_mode"], "each agent alone: not yet"


def test_tenant_window_needs_the_agent_failing_too_and_keeps_the_bound() -> None:
    """A healthy tenant (a failure every 40th call, 2.5 %) trips nothing in 10 minutes of
    ten agents at 60 calls a minute; an agent without failures on the tool is never
    degraded by its tenant's."""
    assert not [s for s in _tenant_outage(Controller(POLICY), 10, 600, 40)
                if s.kind == "safe_mode"]
    c = Controller(POLICY)
    for sec in range(20):  # a0..a3 fail at 50 %, quiet never fails
        facts = [ToolResult(1000 + sec + a / 5, f"a{a}", "crm",
                            "error" if (sec + a) % 2 == 0 else "ok", 10.0, f"e{sec}-{a}", "")
                 for a in range(4)]
        facts.append(ToolResult(1000 + sec + 0.9, "quiet", "crm", "ok", 10.0, "", ""))
        c.apply("acme", facts)
    assert c.snapshot_state()["safe_modes"]["acme/quiet:agent-tool-errors"] == NORMAL


def test_tenant_window_holds_a_small_agent_until_its_tools_outage_ends() -> None:
    """A 5-calls-a-minute agent's last minute with no failure is no evidence that the
    outage is over; the tenant's minute of the tool is. And an agent with no counted
    call on the tool for long_window_s leaves whatever its tenant's window says."""
    rule = POLICY.safe_mode[0]
    windows = {"": CountWindow(5, 700), "crm": CountWindow(5, 700)}
    for i in range(5):  # its last minute: 5 calls, none failing
        for w in windows.values():
            w.add(1100 + i * 12, False)
    failing = {"calls": 300, "failures": 60}  # the tenant's minute of crm: 20 %

    def tenant(tool: str, at: float, seconds: int) -> tuple[int, int]:
        return (failing["calls"], failing["failures"]) if tool == "crm" else (0, 0)

    mode = SafeMode(rule, 60)
    mode.restore({"state": READ_ONLY, "version": 1, "since": 1000.0})
    assert mode.exit_if(1159, 0.0, windows) is not None, "alone it would leave"
    mode.restore({"state": READ_ONLY, "version": 1, "since": 1000.0})
    assert mode.exit_if(1159, 0.0, windows, tenant) is None, "the outage goes on"
    failing["failures"] = 6  # recovered: 2 % of the tenant's minute
    t = mode.exit_if(1160, 0.0, windows, tenant)
    assert t is not None and t.state == NORMAL
    # every call a refused write (not counted): let go after long_window_s of silence
    failing["failures"] = 60
    mode.restore({"state": READ_ONLY, "version": 1, "since": 1000.0})
    assert mode.exit_if(1100 + 4 * 12 + rule.when.long_window_s - 5, 0.0, windows,
                        tenant) is None
    assert mode.exit_if(1100 + 4 * 12 + rule.when.long_window_s + 5, 0.0, windows,
                        tenant) is not None
