"""The LangGraph adapter end to end (issue 24): a real Tansu broker, the real sink into a
real chdb store and the ledger API with approver keys (tests/shell/gate_stack.py, one
stack for the module); a compiled LangGraph graph with a checkpointer and a scripted
model (no network).

- a refund that needs two approvals pauses the graph (``interrupt``), two approvers vote
  through the API, the graph resumes from its checkpointer and the tool runs exactly
  once; the ledger shows one run, with its approvals, as one chain that verifies;
- a denied refund never runs, and the model's next turn sees the refusal;
- a breaker opened by the control loop refuses the next write as a tool message.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.adapters.langgraph import (
    LangGraphLedger,
    ScriptedChatModel,
    approval_ids,
)
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import Ledger
from agentledger.producers.gate import Gate
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.producers.identity import AgentIdentity
from agentledger.schemas.signals import OPEN
from tests.helpers import wait_for
from tests.shell.gate_stack import AGENT, GateStack, gate_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateStack]:
    with EmbeddedBroker() as broker, pytest.MonkeyPatch.context() as patch:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=tmp_path_factory.mktemp("lg") / "data",
                            kafka_bootstrap=broker.bootstrap, sink_batch_seconds=0.3)
        yield from gate_stack(settings, patch)


class RefundAgent:
    """A refund agent as LangGraph builds one: a model node and a ToolNode, checkpointed;
    the model is scripted (``turns``), and what it was shown at each turn is kept."""

    def __init__(self, stack: GateStack, tenant: str, turns: list[Any],
                 is_async: bool = False):
        bootstrap = stack.settings.kafka_bootstrap or ""
        self.ledger = Ledger.connect(bootstrap, AgentIdentity(
            tenant=tenant, agent=AGENT, agent_version="1", principal=f"svc-{AGENT}"))
        self.approvals = ApprovalFollower(bootstrap).start()
        self.control = ControlFollower(bootstrap).start()
        self.safe = SafeModeGuard(self.control, tenant, AGENT, stale_after_s=3600)
        guard = self.safe.with_policy(Gate.load(), approvals=self.approvals)
        self.lg = LangGraphLedger(self.ledger, guard, workflow="langgraph_refund")
        self.ran: list[int] = []
        self.seen: list[list[BaseMessage]] = []

        def refund(charge: str, amount: int) -> str:
            """Refund ``amount`` USD of a charge."""
            self.ran.append(amount)
            return f"refunded {amount} USD of {charge}"

        async def refund_async(charge: str, amount: int) -> str:
            """Refund ``amount`` USD of a charge."""
            return refund(charge, amount)

        @tool
        def lookup(charge: str) -> str:
            """Look a charge up (not gated: recorded by the callback handler)."""
            return f"{charge}: 450 USD, paid"

        create_refund = tool("create_refund")(refund_async if is_async else refund)
        tools = [self.lg.guard_tool(create_refund, tool_name="stripe",
                                    action="create_refund"), lookup]
        model = ScriptedChatModel(messages=iter(turns)).bind_tools(tools)

        def agent(state: MessagesState) -> dict[str, Any]:
            self.seen.append(list(state["messages"]))
            return {"messages": [model.invoke(state["messages"])]}

        async def agent_async(state: MessagesState) -> dict[str, Any]:
            self.seen.append(list(state["messages"]))
            return {"messages": [await model.ainvoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("agent", agent_async if is_async else agent)
        graph.add_node("tools", ToolNode(tools))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        self.graph = graph.compile(checkpointer=InMemorySaver())

    def close(self) -> None:
        self.ledger.flush(15)
        self.approvals.close()
        self.control.close()


def refund(amount: int, call_id: str) -> Any:
    return ScriptedChatModel.says(tool_calls=[{
        "name": "create_refund", "args": {"charge": "ch_1", "amount": amount},
        "id": call_id}])


def landed(stack: GateStack, run_id: str, n: int) -> list[str]:
    """The run's event types in chain order, once all ``n`` are in the store."""
    def types() -> list[str]:
        return [t for (t,) in stack.query(
            "SELECT event_type FROM events FINAL WHERE run_id = {r:String} ORDER BY seq",
            r=run_id)]
    def complete() -> list[str] | None:
        found = types()
        return found if len(found) >= n else None

    return wait_for(complete, 60, what=f"{n} events of run {run_id}") or []


def test_two_approvals_interrupt_and_resume_the_graph_and_the_tool_runs_once(
        stack: GateStack) -> None:
    agent = RefundAgent(stack, "acme", [refund(450, "call_450"),
                                        ScriptedChatModel.says("Refunded 450 USD.")])
    try:
        paused = agent.lg.invoke(agent.graph, {"messages": [HumanMessage("refund 450")]},
                                 "thread-approve")
        (approval_id,) = approval_ids(paused)
        run = agent.lg.run("thread-approve")
        assert agent.ran == [], "the refund must wait for its approvers"
        # resumed before anyone voted: it pauses again on the same request, asks no other
        early = agent.lg.resume(agent.graph, "thread-approve", wait_s=0)
        assert approval_ids(early) == [approval_id] and agent.ran == []
        # a resume value that claims a decision approves nothing: the follower decides
        forged = agent.graph.invoke(
            Command(resume={"approval_id": approval_id, "decision": "approved"}),
            agent.lg.config("thread-approve"))
        assert approval_ids(forged) == [approval_id] and agent.ran == []

        def vote(key: str) -> Any:
            answer = stack.call("POST", f"/v1/approvals/{approval_id}/approve", key,
                                json={"reason": "customer is right"})
            return answer.json() if answer.status_code == 200 else None

        first = wait_for(lambda: vote("ana"), 60, what="ana's vote (the request landed)")
        assert first["status"] == "pending"
        assert vote("ben")["status"] == "approved"
        done = agent.lg.resume(agent.graph, "thread-approve", wait_s=30)
        assert approval_ids(done) == []
        assert agent.ran == [450], "the tool runs exactly once after the vote"
        assert done["messages"][-2].content == "refunded 450 USD of ch_1"
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
        "SELECT model, cost_usd FROM events FINAL WHERE run_id = {r:String} AND "
        "event_type = 'model.call' ORDER BY seq LIMIT 1", r=run.run_id)
    assert priced[0] == "gpt-4o-mini" and priced[1] > 0, priced
    verified = stack.call("GET", f"/v1/verify/{run.run_id}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_an_async_graph_pauses_and_resumes_and_ungated_tools_are_recorded(
        stack: GateStack) -> None:
    both = ScriptedChatModel.says(tool_calls=[
        {"name": "lookup", "args": {"charge": "ch_2"}, "id": "call_look"},
        {"name": "create_refund", "args": {"charge": "ch_2", "amount": 300},
         "id": "call_300"}])
    agent = RefundAgent(stack, "acme", [both, ScriptedChatModel.says("Refunded.")],
                        is_async=True)

    async def scenario() -> tuple[str, Any]:
        paused = await agent.lg.ainvoke(agent.graph, {"messages": [HumanMessage("x")]},
                                        "thread-async")
        (approval_id,) = approval_ids(paused)
        def voted(key: str) -> bool:
            return stack.call("POST", f"/v1/approvals/{approval_id}/approve", key,
                              json={"reason": "ok"}).status_code == 200

        wait_for(lambda: voted("ana"), 60, what="ana's vote (the request landed)")
        assert voted("ben")
        return approval_id, await agent.lg.aresume(agent.graph, "thread-async", wait_s=30)

    try:
        run = agent.lg.run("thread-async")
        approval_id, done = asyncio.run(scenario())
        assert approval_ids(done) == [] and agent.ran == [300]
        assert run.outcome == "success"
    finally:
        agent.close()
    types = landed(stack, run.run_id, len(run.event_ids))
    calls = stack.query("SELECT tool, action FROM events FINAL WHERE run_id = {r:String} "
                        "AND event_type = 'tool.call' ORDER BY seq", r=run.run_id)
    # ToolNode runs the ungated lookup again when the node re-executes on resume (it is
    # recorded each time it runs); the gated refund runs once
    assert calls.count(("stripe", "create_refund")) == 1
    assert calls.count(("lookup", "lookup")) == 2, calls
    assert types.count("approval.requested") == 1 and types[-1] == "run.finished"
    assert stack.query("SELECT JSONExtractString(body, 'approval_id'), decision FROM events "
                       "FINAL WHERE run_id = {r:String} AND event_type = "
                       "'approval.resolved'", r=run.run_id) == [(approval_id, "approved")]
    verified = stack.call("GET", f"/v1/verify/{run.run_id}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_parallel_escalations_are_asked_at_once_and_one_resume_runs_both(
        stack: GateStack) -> None:
    two = ScriptedChatModel.says(tool_calls=[
        {"name": "create_refund", "args": {"charge": "ch_3", "amount": 250}, "id": "p1"},
        {"name": "create_refund", "args": {"charge": "ch_4", "amount": 260}, "id": "p2"}])
    agent = RefundAgent(stack, "acme", [two, ScriptedChatModel.says("Both refunded.")])
    try:
        run = agent.lg.run("thread-parallel")
        agent.lg.invoke(agent.graph, {"messages": [HumanMessage("two refunds")]},
                        "thread-parallel")

        def both() -> list[str] | None:
            found = [a for (a,) in stack.query(
                "SELECT JSONExtractString(body, 'approval_id') FROM events FINAL WHERE "
                "run_id = {r:String} AND event_type = 'approval.requested'", r=run.run_id)]
            return found if len(found) == 2 else None

        def events() -> list[tuple[str, str]]:
            return stack.query("SELECT event_type, JSONExtractString(body, 'approval_id') "
                               "FROM events FINAL WHERE run_id = {r:String} ORDER BY seq",
                               r=run.run_id)

        requested = wait_for(both, 60, what="both requests in the store",
                             seen=events) or []
        for approval_id in requested:
            for key in ("ana", "ben"):
                voted = stack.call("POST", f"/v1/approvals/{approval_id}/approve", key,
                                   json={"reason": "ok"})
                assert voted.status_code == 200, voted.text
        done = agent.lg.resume(agent.graph, "thread-parallel", wait_s=30)
        assert approval_ids(done) == []
        assert sorted(agent.ran) == [250, 260], "each tool ran exactly once"
    finally:
        agent.close()
    types = landed(stack, run.run_id, len(run.event_ids))
    assert types.count("approval.requested") == 2 and types.count("tool.call") == 2, types
    verified = stack.call("GET", f"/v1/verify/{run.run_id}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_a_denied_tool_never_runs_and_the_model_gets_the_refusal(stack: GateStack) -> None:
    agent = RefundAgent(stack, "acme", [refund(900, "call_900"),
                                        ScriptedChatModel.says("I cannot refund 900 USD.")])
    try:
        run = agent.lg.run("thread-deny")
        done = agent.lg.invoke(agent.graph, {"messages": [HumanMessage("refund 900")]},
                               "thread-deny")
        assert agent.ran == []
        refusal = agent.seen[-1][-1]
        assert isinstance(refusal, ToolMessage) and refusal.status == "error"
        assert "refund-hard-limit" in str(refusal.content), refusal.content
        assert refusal.tool_call_id == "call_900"
        assert done["messages"][-1].content == "I cannot refund 900 USD."
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
        refund(50, "call_50"), ScriptedChatModel.says("Refunded."),
        refund(60, "call_60"), ScriptedChatModel.says("Stripe is unavailable.")])
    try:
        agent.lg.invoke(agent.graph, {"messages": [HumanMessage("refund 50")]}, "t-before")
        assert agent.ran == [50]
        stack.breaker("globex", "stripe", OPEN, 1)
        wait_for(lambda: not agent.safe.decide("stripe", "write"), 30,
                 what="the agent's control follower to see the breaker")
        agent.lg.invoke(agent.graph, {"messages": [HumanMessage("refund 60")]}, "t-after")
        assert agent.ran == [50], "the write after the breaker opened never ran"
        refusal = agent.seen[-1][-1]
        assert isinstance(refusal, ToolMessage) and refusal.status == "error"
        assert "breaker_open" in str(refusal.content), refusal.content
    finally:
        agent.close()
    wait_for(lambda: stack.query(
        "SELECT count() FROM events FINAL WHERE event_type = 'policy.decision' AND "
        "tenant = 'globex' AND JSONExtractString(body, 'rule') = 'breaker_open'")[0][0] >= 1,
        60, what="the breaker's refusal in the ledger")


def test_without_the_extra_the_import_names_it() -> None:
    code = ("import sys; sys.modules['langgraph'] = None\n"
            "import agentledger.producers.enforce, agentledger.producers.adapters\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('langgraph', 'langchain_core') and sys.modules[m] is not None))\n"
            "try:\n    import agentledger.producers.adapters.langgraph\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "pip install 'agentledger[langgraph]'" in out, out
    assert out.startswith("[]\n"), "the base SDK must not import the framework"
