"""The OpenAI Agents SDK adapter end to end (issue 24): a real Tansu broker, the real sink
into a real chdb store and the ledger API with approver keys (tests/shell/gate_stack.py,
one stack for the module); an Agents SDK agent on the SDK's own scripted model
(``agents.testing.ScriptedModel``, no network).

- a refund that needs two approvals interrupts the run (``result.interruptions``), two
  approvers vote through the API, the run resumes from its ``RunState`` and the tool runs
  exactly once; the ledger shows one run, with its approvals, as one chain that verifies;
- a denied refund never runs, and the model's next turn reads the refusal;
- a breaker opened by the control loop refuses the next write as a tool result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, RunConfig, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.adapters.openai_agents import AgentsLedger
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.gate import Gate
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas.signals import OPEN
from tests.helpers import wait_for
from tests.shell.gate_stack import AGENT, GateStack, gate_stack

pytestmark = pytest.mark.integration

OFFLINE = RunConfig(tracing_disabled=True)  # the SDK's own trace export would go online


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateStack]:
    with EmbeddedBroker() as broker, pytest.MonkeyPatch.context() as patch:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=tmp_path_factory.mktemp("oa") / "data",
                            kafka_bootstrap=broker.bootstrap, sink_batch_seconds=0.3)
        yield from gate_stack(settings, patch)


class RefundAgent:
    """A refund agent as the Agents SDK builds one, on a scripted model (``turns``)."""

    def __init__(self, stack: GateStack, tenant: str, turns: list[Any]):
        bootstrap = stack.settings.kafka_bootstrap or ""
        self.ledger = Ledger.connect(bootstrap, AgentIdentity(
            tenant=tenant, agent=AGENT, agent_version="1", principal=f"svc-{AGENT}"))
        self.approvals = ApprovalFollower(bootstrap).start()
        self.control = ControlFollower(bootstrap).start()
        self.safe = SafeModeGuard(self.control, tenant, AGENT, stale_after_s=3600)
        guard = self.safe.with_policy(Gate.load(), approvals=self.approvals)
        self.al = AgentsLedger(self.ledger, guard, workflow="openai_agents_refund",
                               model_name="gpt-4o-mini")
        self.ran: list[int] = []

        @function_tool
        def create_refund(charge: str, amount: int) -> str:
            """Refund ``amount`` USD of a charge."""
            self.ran.append(amount)
            if amount == 13:
                raise ConnectionError("stripe answered 502")
            return f"refunded {amount} USD of {charge}"

        self.model = ScriptedModel(turns, default_usage=Usage(
            requests=1, input_tokens=120, output_tokens=30, total_tokens=150))
        self.agent = Agent(name="refunds", model=self.model, tools=[
            self.al.guard_tool(create_refund, tool_name="stripe", action="create_refund")])

    def close(self) -> None:
        self.ledger.flush(15)
        self.approvals.close()
        self.control.close()

    def tool_output(self) -> str:
        """What the model read as the last tool result (its last call's input)."""
        last = self.model.last_call
        assert last is not None and isinstance(last.input, list)
        outputs = [i for i in last.input if isinstance(i, dict)
                   and i.get("type") == "function_call_output"]
        assert outputs, last.input
        return str(outputs[-1]["output"])


def refund(amount: int, call_id: str) -> list[Any]:
    return [function_call("create_refund", {"charge": "ch_1", "amount": amount},
                          call_id=call_id)]


def landed(stack: GateStack, run_id: str, n: int) -> list[str]:
    """The run's event types in chain order, once all ``n`` are in the store."""
    def types() -> list[str]:
        return [t for (t,) in stack.query(
            "SELECT event_type FROM events FINAL WHERE run_id = {r:String} ORDER BY seq",
            r=run_id)]
    return wait_for(lambda: len(found := types()) >= n and found, 60,
                    what=f"{n} events of run {run_id}")


def test_two_approvals_interrupt_and_resume_the_run_and_the_tool_runs_once(
        stack: GateStack) -> None:
    agent = RefundAgent(stack, "acme", [refund(450, "call_450"),
                                        [assistant_message("Refunded 450 USD.")]])
    try:
        paused = agent.al.run_sync(agent.agent, "refund 450 USD of ch_1", run_config=OFFLINE)
        assert paused.paused and len(paused.result.interruptions) == 1
        (approval_id,) = paused.approval_ids
        run = paused.run
        assert agent.ran == [], "the refund must wait for its approvers"
        # resumed before anyone voted: still paused on the same request, nobody asked again
        early = agent.al.resume_sync(paused, wait_s=0, run_config=OFFLINE)
        assert early.paused and early.approval_ids == [approval_id] and agent.ran == []

        def vote(key: str) -> Any:
            answer = stack.call("POST", f"/v1/approvals/{approval_id}/approve", key,
                                json={"reason": "customer is right"})
            return answer.json() if answer.status_code == 200 else None

        first = wait_for(lambda: vote("ana"), 60, what="ana's vote (the request landed)")
        assert first["status"] == "pending"
        assert vote("ben")["status"] == "approved"
        done = agent.al.resume_sync(early, wait_s=30, run_config=OFFLINE)
        assert not done.paused and done.final_output == "Refunded 450 USD."
        assert agent.ran == [450], "the tool runs exactly once after the vote"
        assert agent.tool_output() == "refunded 450 USD of ch_1"
        assert run.finished and run.outcome == "success"
    finally:
        agent.close()
    types = landed(stack, run.run_id, len(run.event_ids))
    assert types == ["run.started", "model.call", "policy.decision", "approval.requested",
                     "approval.resolved", "tool.call", "tool.result", "model.call",
                     "run.finished"]
    (resolved,) = stack.query(
        "SELECT JSONExtractString(body, 'approval_id'), decision, "
        "JSONExtract(body, 'approvers', 'Array(String)') FROM events FINAL "
        "WHERE run_id = {r:String} AND event_type = 'approval.resolved'", r=run.run_id)
    assert resolved == (approval_id, "approved", ["ana@finance", "ben@finance"])
    (priced,) = stack.query(
        "SELECT model, cost_usd, tokens_in FROM events FINAL WHERE run_id = {r:String} AND "
        "event_type = 'model.call' ORDER BY seq LIMIT 1", r=run.run_id)
    assert priced[0] == "gpt-4o-mini" and priced[1] > 0 and priced[2] == 120, priced
    verified = stack.call("GET", f"/v1/verify/{run.run_id}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_a_denied_tool_never_runs_and_the_model_gets_the_refusal(stack: GateStack) -> None:
    agent = RefundAgent(stack, "acme", [refund(900, "call_900"),
                                        [assistant_message("I cannot refund 900 USD.")]])
    try:
        done = agent.al.run_sync(agent.agent, "refund 900 USD of ch_1", run_config=OFFLINE)
        run = done.run
        assert agent.ran == [] and not done.paused
        refusal = agent.tool_output()
        assert "rule: refund-hard-limit" in refusal, refusal
        assert done.final_output == "I cannot refund 900 USD."
    finally:
        agent.close()
    types = landed(stack, run.run_id, len(run.event_ids))
    assert types == ["run.started", "model.call", "policy.decision", "model.call",
                     "run.finished"], "the denied refund never reached the tool"
    (deny,) = stack.query(
        "SELECT decision, JSONExtractString(body, 'rule') FROM events FINAL WHERE "
        "run_id = {r:String} AND event_type = 'policy.decision'", r=run.run_id)
    assert deny == ("deny", "refund-hard-limit")


def test_an_open_breaker_refuses_the_next_write(stack: GateStack) -> None:
    # tenant globex: the breaker opened here leaves acme's stripe alone
    agent = RefundAgent(stack, "globex", [
        refund(50, "call_50"), refund(13, "call_13"), [assistant_message("Refunded.")],
        refund(60, "call_60"), [assistant_message("Stripe is unavailable.")]])
    try:
        first = agent.al.run_sync(agent.agent, "refund 50 and 13", run_config=OFFLINE)
        assert agent.ran == [50, 13]
        # the tool's failure reaches the model as the SDK's own error message, and the
        # ledger records it as an error (what breakers count), not as a success
        assert agent.tool_output().startswith("An error occurred while running the tool"), \
            agent.tool_output()
        assert landed(stack, first.run.run_id, len(first.run.event_ids))
        results = stack.query(
            "SELECT status, error_type FROM events FINAL WHERE run_id = {r:String} AND "
            "event_type = 'tool.result' ORDER BY seq", r=first.run.run_id)
        assert results == [("ok", ""), ("error", "ConnectionError")], results
        stack.breaker("globex", "stripe", OPEN, 1)
        wait_for(lambda: not agent.safe.decide("stripe", "write"), 30,
                 what="the agent's control follower to see the breaker")
        done = agent.al.run_sync(agent.agent, "refund 60", run_config=OFFLINE)
        assert agent.ran == [50, 13], "the write after the breaker opened never ran"
        assert "rule: breaker_open" in agent.tool_output(), agent.tool_output()
        assert done.final_output == "Stripe is unavailable."
    finally:
        agent.close()
    wait_for(lambda: stack.query(
        "SELECT count() FROM events FINAL WHERE event_type = 'policy.decision' AND "
        "tenant = 'globex' AND JSONExtractString(body, 'rule') = 'breaker_open'")[0][0] >= 1,
        60, what="the breaker's refusal in the ledger")


def test_a_rejected_approval_reaches_the_model_and_ungated_tools_are_recorded(
        stack: GateStack) -> None:
    agent = RefundAgent(stack, "acme", [
        [function_call("get_charge", {"charge": "ch_7"}, call_id="call_get")],
        refund(300, "call_300"), [assistant_message("The refund was not approved.")]])
    looked_up: list[str] = []

    @function_tool
    def get_charge(charge: str) -> str:
        """Look a charge up (ungated: recorded by the run hooks)."""
        looked_up.append(charge)
        return f"{charge}: 300 USD"

    agent.agent.tools.append(get_charge)
    try:
        paused = agent.al.run_sync(agent.agent, "refund ch_7", run_config=OFFLINE)
        (approval_id,) = paused.approval_ids
        run = paused.run
        denied = wait_for(lambda: (r := stack.call(
            "POST", f"/v1/approvals/{approval_id}/deny", "ana",
            json={"reason": "duplicate refund"})).status_code == 200 and r.json(), 60,
            what="ana's denial (the request landed)")
        assert denied["status"] == "rejected"
        done = agent.al.resume_sync(paused, wait_s=30, run_config=OFFLINE)
        assert agent.ran == [] and looked_up == ["ch_7"]
        assert "rule: approval_rejected" in agent.tool_output(), agent.tool_output()
        assert done.final_output == "The refund was not approved."
        assert run.finished and run.outcome == "success"
    finally:
        agent.close()
    types = landed(stack, run.run_id, len(run.event_ids))
    assert types == ["run.started", "model.call", "tool.call", "tool.result", "model.call",
                     "policy.decision", "approval.requested", "approval.resolved",
                     "model.call", "run.finished"]
    (resolved,) = stack.query(
        "SELECT decision FROM events FINAL WHERE run_id = {r:String} AND "
        "event_type = 'approval.resolved'", r=run.run_id)
    assert resolved == ("rejected",)


def test_without_the_extra_the_import_names_it() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['agents'] = None\n"
            "try:\n    import agentledger.producers.adapters.openai_agents\n"
            "except ImportError as exc:\n    print(exc)\n"
            "import agentledger.producers.enforce, agentledger.producers.adapters\n"
            "print('agents' in sys.modules and sys.modules['agents'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "pip install 'agentledger[openai-agents]'" in out, out
    assert out.strip().endswith("False"), "the base SDK must not import the framework"
