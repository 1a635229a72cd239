"""An OpenAI Agents SDK refund agent under agentledger, offline (docs/adapters.md).

    pip install 'agentledger[embedded,openai-agents]'
    python examples/openai_agents_refund.py

Everything runs on this machine: the embedded Tansu broker, the sink into an in-process
chdb store (in a temporary directory), the ledger API on a loopback port, and an agent on
the Agents SDK's scripted model (``agents.testing.ScriptedModel``: no network, no API key).

1. The agent refunds 450 USD: the policy wants two finance approvals, so the run is
   interrupted (``result.interruptions``) with the approval id.
2. Two approvers vote through the API (``POST /v1/approvals/{id}/approve``).
3. The run resumes from its ``RunState``; the refund runs exactly once.
4. The agent tries 900 USD: the policy denies it and the model reads the refusal.
5. The ledger shows the first run, approvals included, as one chain that verifies.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from agents import Agent, RunConfig, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import Usage

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.producers.adapters.openai_agents import AgentsLedger
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.gate import Gate
from agentledger.producers.guard import SafeModeGuard
from agentledger.services import build_sink, open_store, start_api

OFFLINE = RunConfig(tracing_disabled=True)  # the SDK would export its own traces online


def build_agent(al: AgentsLedger, refunded: list[int]) -> Agent[Any]:
    """The agent as you would write it, its tool gated by ``al.guard_tool``."""

    @function_tool
    def create_refund(charge: str, amount: int) -> str:
        """Refund ``amount`` USD of a charge."""
        refunded.append(amount)
        return f"refunded {amount} USD of {charge}"

    model = ScriptedModel([
        [function_call("create_refund", {"charge": "ch_1", "amount": 450}, call_id="c1")],
        [assistant_message("Refunded 450 USD of ch_1.")],
        [function_call("create_refund", {"charge": "ch_2", "amount": 900}, call_id="c2")],
        [assistant_message("I cannot refund 900 USD: it is over the hard limit.")],
    ], default_usage=Usage(requests=1, input_tokens=420, output_tokens=60, total_tokens=480))
    return Agent(name="refunds", instructions="Refund what the customer asks for.",
                 model=model, tools=[al.guard_tool(create_refund, tool_name="stripe",
                                                   action="create_refund")])


def wait(what: str, condition: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling the API for a condition, with a deadline
    return found


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        data = Path(tmp) / "data"
        # the API signs approval states with this data dir's ledger key; the agent trusts it
        os.environ.update(AGENTLEDGER_DATA_DIR=str(data),
                          AGENTLEDGER_LEDGER_KEY_DIR=str(data / "keys"),
                          AGENTLEDGER_KAFKA_BOOTSTRAP=broker.bootstrap)
        settings = Settings(data_dir=data, kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.3)
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        sink = build_sink(settings, broker.bootstrap, open_store(settings))
        sink_thread = threading.Thread(target=sink.run, daemon=True)
        sink_thread.start()
        keys = {name: new_key() for name in ("ana", "ben", "reader")}
        api = start_api(settings, open_store(settings), host="127.0.0.1", port=0,
                        keys=KeyRing([entry_for("ana@finance", keys["ana"], ["acme"],
                                                roles=["finance"]),
                                      entry_for("ben@finance", keys["ben"], ["acme"],
                                                roles=["finance"]),
                                      entry_for("auditor", keys["reader"], ["acme"])]))

        def call(method: str, path: str, key: str, **kw: Any) -> httpx.Response:
            return httpx.request(method, api.url + path, timeout=60, **kw,
                                 headers={"Authorization": f"Bearer {keys[key]}"})

        ledger = Ledger.connect(broker.bootstrap, AgentIdentity(
            tenant="acme", agent="refund-agent", agent_version="1",
            principal="svc-refund-agent"))
        approvals = ApprovalFollower(broker.bootstrap).start()
        control = SafeModeGuard.connect(broker.bootstrap, "acme", "refund-agent",
                                        stale_after_s=3600)  # no stream workers here
        al = AgentsLedger(ledger, control.with_policy(Gate.load(), approvals=approvals),
                          workflow="refund_with_approval", model_name="gpt-4o-mini")
        refunded: list[int] = []
        agent = build_agent(al, refunded)
        try:
            paused = al.run_sync(agent, "Please refund 450 USD of ch_1.", run_config=OFFLINE)
            (approval_id,) = paused.approval_ids
            print(f"1. run {paused.run.run_id} paused on approval {approval_id}; "
                  f"refunded so far: {refunded}")
            for who in ("ana", "ben"):
                vote = wait(f"{who}'s vote", lambda who=who: (r := call(
                    "POST", f"/v1/approvals/{approval_id}/approve", who,
                    json={"reason": "customer is right"})).status_code == 200 and r.json())
                print(f"2. {who} approved: the request is {vote['status']}")
            done = al.resume_sync(paused, wait_s=30, run_config=OFFLINE)
            print(f"3. resumed: {done.final_output!r}; refunded: {refunded}")
            denied = al.run_sync(agent, "Please refund 900 USD of ch_2.", run_config=OFFLINE)
            print(f"4. denied: {denied.final_output!r}; refunded: {refunded}")
            ledger.flush(15)
            run_id = done.run.run_id
            n = len(done.run.event_ids)
            rows = wait("the run in the ledger", lambda: (r := call(
                "GET", "/v1/events", "reader", params={"run_id": run_id, "order": "asc"})
            ).status_code == 200 and len(r.json()["events"]) >= n and r.json()["events"])
            print("5. the ledger:", " → ".join(e["event_type"] for e in rows))
            verified = call("GET", f"/v1/verify/{run_id}", "reader").json()
            print(f"   chain verifies: {verified['ok']}")
        finally:
            approvals.close()
            control.follower.close()
            desk = getattr(api.server.config.app.state, "approvals", None)
            if desk is not None:  # the API's own follower of the votes
                desk.close()
            api.stop()
            sink.stop()
            sink_thread.join(60)


if __name__ == "__main__":
    main()
