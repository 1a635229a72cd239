"""The store the ledger API tests share, one per package (see ``conftest.py``): a seeded
simulation for two tenants plus one hand-written run with every kind of step, produced to
a real Tansu broker, landed by the real sink in a real chdb store, served by the real API
on a loopback port (published like `agentledger up` does, so CLI subprocesses find it).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal
from agentledger.services import ApiServer
from tests.conftest import CLI

TENANTS = ("acme", "globex")
RATES = {("acme", "ticket_triage"): Decimal("0.50"), ("acme", "crm_update"): Decimal("1.25"),
         ("acme", "refund_with_approval"): Decimal("3.00"),
         ("globex", "ticket_triage"): Decimal("0.40")}


@dataclass
class Store:
    settings: Settings
    api: ApiServer
    client: Any
    keys: dict[str, str]
    events: list[dict[str, Any]]  # every event, as consumed back from Kafka
    full_run: dict[str, Any]
    env: dict[str, str]

    def get(self, path: str, key: str | None = "acme", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.get(self.api.url + path, params=params, headers=headers, timeout=60)

    def cli(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if key:
            env["AGENTLEDGER_API_KEY"] = self.keys[key]
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                              timeout=120)

    def runs(self, tenant: str) -> list[str]:
        return sorted({e["run_id"] for e in self.events if e["tenant"] == tenant
                       and e["event_type"] == "run.finished"})


def full_run(bootstrap: str) -> dict[str, Any]:
    """One run with inputs, a retrieval, model calls, tool calls, a policy escalation and an
    approval: everything a replay bundle must carry."""
    ident = AgentIdentity(tenant="acme", agent="refund-agent", agent_version="3.1.0",
                          principal="svc-refund")
    with Ledger.connect(bootstrap, ident) as led, led.run(
            "refund_with_approval", inputs={"ticket": "T-1", "amount": 250},
            input_ref="s3://inputs/T-1", prompt_template="refund", prompt_version="9",
            policy_version="12", max_cost_usd=1.0, on_behalf_of="alice") as run:
        run.retrieval(source="kb", index_version="kb-2026-11",
                      documents={"kb-7": "refund policy", "kb-9": "limits"})
        run.model_call(provider="openai", model="gpt-4o-mini", model_version="2024-07-18",
                       role="planner", tokens_in=900, tokens_out=120, latency_ms=800)
        with run.tool_call("stripe", "get_charge", mode="read", args={"id": "ch_1"},
                           tool_version="2.3.1", schema={"v": 2}) as call:
            call.result("ok", latency_ms=80)
        run.policy_decision(policy_id="refund-limit", policy_version="3", rule="amount > 100",
                            decision="escalate", action="refund 250 USD")
        run.approval_requested(approver="support-lead", action="refund 250 USD")
        run.approval_resolved(approver="support-lead", decision="approved", latency_ms=42_000)
        with run.tool_call("stripe", "create_refund", mode="write",
                           args={"id": "ch_1", "amount": 250, "api_key": "sk-live-secret"},
                           tool_version="2.3.1", schema={"v": 2},
                           idempotency_key="T-1:refund") as call:
            call.result("ok", latency_ms=120, side_effect={"resource": "stripe/ch_1",
                                                           "op": "refund"}, verified=True)
        run.model_call(provider="anthropic", model="claude-haiku", model_version="4.5",
                       role="executor", tokens_in=300, tokens_out=80, latency_ms=400)
    return {"run_id": run.run_id, "event_ids": list(run.event_ids)}


def control_signals(bootstrap: str) -> int:
    from confluent_kafka import Producer

    producer = Producer(client_config(bootstrap, "producer"))
    now = dt.datetime.now(dt.UTC)
    for tenant in TENANTS:
        signal = ControlSignal(kind="safe_mode", scope=f"{tenant}/triage-bot",
                               rule="tool-error-rate", state="read_only",
                               previous_state="normal", version=1, ts=now,
                               reason=f"{tenant} errors", policy_version="1")
        producer.produce(topics.CONTROL, signal.to_json(), signal.key.encode())
    assert producer.flush(15) == 0
    return len(TENANTS)

