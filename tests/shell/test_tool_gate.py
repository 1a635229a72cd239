"""Issue 24, part 1: the control plane over HTTP (``POST /v1/gate/check`` and the
approval long-poll), against a real broker, the real sink and a real chdb store.

Every wait is on a condition with a deadline (what was seen last is in the failure);
no wall-clock time is asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentledger.core.settings import Settings
from agentledger.schemas.signals import OPEN
from tests.helpers import wait_for
from tests.shell.gate_stack import AGENT, GateStack, gate_stack

pytestmark = pytest.mark.integration

NODE_AGENT = Path(__file__).with_name("gate_agent.test.mjs")
REFUND = {"tool": "stripe", "action": "create_refund", "mode": "write",
          "idempotency_key": "ch_1:refund"}


@pytest.fixture
def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[GateStack]:
    yield from gate_stack(settings, monkeypatch)


def test_the_key_decides_which_agent_checks(stack: GateStack) -> None:
    read = {"run_id": "run-key-1", "tool": "stripe", "action": "get_charge", "mode": "read",
            "args": {"id": "ch_1"}}
    own = stack.check(**read, agent=AGENT)
    assert own.status_code == 200, own.text
    assert (own.json()["decision"], own.json()["agent"]) == ("allow", AGENT)
    for other in ("triage-bot", "globex/refund-agent", "acme/triage-bot"):
        claimed = stack.check(**read, agent=other)
        assert claimed.status_code == 403, claimed.text
        assert "cannot check as" in claimed.json()["detail"]
    unbound = stack.check("reader", **read)
    assert unbound.status_code == 403 and "no agent" in unbound.json()["detail"], unbound.text
    multi = stack.check("multi", **read)
    assert multi.status_code == 403 and "exactly one agent" in multi.json()["detail"], \
        multi.text
    bad = stack.check(**{**read, "mode": "delete"})
    assert bad.status_code == 422, bad.text


def test_an_open_breaker_makes_the_check_deny_a_write(stack: GateStack) -> None:
    body = {**REFUND, "run_id": "run-breaker-1", "args": {"id": "ch_1", "amount": 50}}
    before = stack.check(**body)
    assert before.status_code == 200, before.text
    assert before.json()["decision"] == "allow", before.json()
    stack.breaker("acme", "stripe", OPEN, 1)
    seen = wait_for(lambda: (r := stack.check(**body).json())["decision"] == "deny" and r,
                    30, what="the check to see the signed breaker")
    assert (seen["rule"], seen["policy_id"]) == ("breaker_open", "agentledger.control")
    # the catalog's mode wins: a refund declared "read" is still a write, still refused
    declared_read = stack.check(**{**body, "mode": "read"}).json()
    assert (declared_read["mode"], declared_read["decision"]) == ("write", "deny")


def test_a_denied_call_is_recorded_on_a_gate_run(stack: GateStack) -> None:
    run_id = "run-denied-1"
    denied = stack.check(run_id=run_id, tool="gmail", action="send_message", mode="write",
                         args={"to": "bob@example.com", "password": "hunter2"},
                         idempotency_key="mail-1")
    assert denied.status_code == 200, denied.text
    assert (denied.json()["decision"], denied.json()["rule"]) == ("deny", "gmail-never-send")
    sql = ("SELECT run_id, JSONExtractString(body, 'rule'), JSONExtractString(body, "
           "'decision') FROM events FINAL WHERE event_type = 'policy.decision' AND tenant = "
           "'acme' AND agent = {a:String} AND JSONExtractString(body, 'action') = "
           "'gmail:send_message'")
    rows = wait_for(lambda: stack.query(sql, a=AGENT), 60, what="the deny in the store")
    assert [r[1:] for r in rows] == [("gmail-never-send", "deny")]
    started = stack.query(
        "SELECT JSONExtractString(body, 'workflow'), JSONExtractString(body, 'input_ref') "
        "FROM events FINAL WHERE event_type = 'run.started' AND run_id = {r:String}",
        r=rows[0][0])
    assert started == [("http-gate", f"agent-run:{run_id}")]
    verified = stack.call("GET", f"/v1/verify/{rows[0][0]}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def test_a_node_agent_is_escalated_approved_and_proceeds(stack: GateStack) -> None:
    """The agent in another language: node's own test runner and plain fetch."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    env = {**os.environ, "GATE_API_URL": stack.api.url, "GATE_AGENT_KEY": stack.keys["agent"],
           "GATE_APPROVER_KEYS": f"{stack.keys['ana']},{stack.keys['ben']}"}
    done = subprocess.run([node, "--test", str(NODE_AGENT)], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# pass 1" in done.stdout and "# fail 0" in done.stdout, done.stdout
    rows = stack.query(
        "SELECT run_id, JSONExtractString(body, 'approval_id') FROM events FINAL WHERE "
        "event_type = 'approval.requested' AND tenant = 'acme' AND agent = {a:String}",
        a=AGENT)
    assert len(rows) == 1, rows
    resolved = wait_for(lambda: stack.query(
        "SELECT JSONExtractString(body, 'decision'), JSONExtractString(body, 'approval_id') "
        "FROM events FINAL WHERE event_type = 'approval.resolved' AND run_id = {r:String}",
        r=rows[0][0]), 60, what="the approval.resolved on the gate run")
    assert resolved == [("approved", rows[0][1])]

    def decisions() -> list[str]:
        return [d[0] for d in stack.query(
            "SELECT JSONExtractString(body, 'decision') FROM events FINAL WHERE run_id = "
            "{r:String} AND event_type = 'policy.decision' ORDER BY seq", r=rows[0][0])]

    # escalated; a bigger refund on the approval refused; the approved one allowed; the
    # used-up approval refused
    wanted = ["escalate", "deny", "allow", "deny"]
    wait_for(lambda: decisions() == wanted, 60,
             what="the gate run's decisions: escalate, deny, allow, deny")
    verified = stack.call("GET", f"/v1/verify/{rows[0][0]}", "reader")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text


def _otel_spans(agent_name: str, *, budget_usd: float | None, close: bool
                ) -> tuple[str, bytes]:
    """An OTel agent's spans as its exporter sends them mid-run: two priced model calls
    whose agent span is still open (unless ``close``), the budget on the resource."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.otlputil import request_bytes

    memory = InMemorySpanExporter()
    resource = {"service.name": agent_name}
    if budget_usd is not None:
        resource["agentledger.budget.max_cost_usd"] = budget_usd  # type: ignore[assignment]
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("node.agent")
    root = tracer.start_span("invoke_agent refunds", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_name})
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=close):
        for _ in range(2):  # gpt-4o: 2.50 in / 10.00 out per Mtok → 0.0125 USD each
            with tracer.start_as_current_span("chat gpt-4o", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 1000}):
                pass
    trace_id = f"{root.get_span_context().trace_id:032x}"
    return trace_id, request_bytes(list(memory.get_finished_spans()))


def _export(stack: GateStack, body: bytes, key: str = "agent") -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    sent = httpx.post(f"{stack.api.url}/v1/traces", content=body, timeout=60,
                      headers={"Authorization": f"Bearer {stack.keys[key]}",
                               "Content-Type": "application/x-protobuf"})
    assert sent.status_code == 200, sent.text
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(sent.content)
    return answer.partial_success


def test_an_otel_fed_run_over_its_budget_is_refused_by_the_gate(stack: GateStack) -> None:
    run_id, spans = _otel_spans(AGENT, budget_usd=0.02, close=False)
    read = {"run_id": run_id, "tool": "stripe", "action": "get_charge", "mode": "read",
            "args": {"id": "ch_1"}}
    first = stack.check(**read).json()
    assert first["decision"] == "allow", first  # nothing received yet: nothing spent
    assert _export(stack, spans).rejected_spans == 0
    refused = stack.check(**read).json()  # 0.025 USD received > 0.02
    assert (refused["decision"], refused["rule"]) == ("deny", "budget_exceeded"), refused
    assert "max_cost_usd 0.02" in refused["reason"], refused
    within_id, within = _otel_spans(AGENT, budget_usd=1.0, close=False)
    assert _export(stack, within).rejected_spans == 0
    assert stack.check(**{**read, "run_id": within_id}).json()["decision"] == "allow"
    # the budget lands in run.started, so the control loop folds it like an SDK run's
    closed_id, closed = _otel_spans(AGENT, budget_usd=0.02, close=True)
    assert _export(stack, closed).rejected_spans == 0
    started = wait_for(lambda: stack.query(
        "SELECT body FROM events WHERE run_id = {r:String} AND event_type = 'run.started'",
        r=closed_id), 60, what=f"run.started of the closed OTel run {closed_id}")
    assert '"max_cost_usd":0.02' in started[0][0].replace(" ", ""), started


def test_a_key_bound_to_one_agent_cannot_record_spans_as_another(stack: GateStack) -> None:
    own_id, own = _otel_spans(AGENT, budget_usd=None, close=True)
    assert _export(stack, own).rejected_spans == 0
    other_id, other = _otel_spans("triage-bot", budget_usd=None, close=True)
    refused = _export(stack, other)
    assert refused.rejected_spans == 1, refused  # the agent span names triage-bot: at once
    assert "agent_not_bound" in refused.error_message and "triage-bot" in \
        refused.error_message, refused
    # the two model spans claim nothing themselves, but the run they would make records
    # as triage-bot (the service): it is refused whole when it closes, nothing lands
    rows = wait_for(lambda: (r := stack.query(
        "SELECT reason, count() FROM rejected_events FINAL WHERE message_key = {t:String} "
        "GROUP BY reason", t=other_id)) and r[0][1] >= 3 and r, 60,
        what=f"3 refused spans of trace {other_id}")
    assert rows == [("agent_not_bound", 3)], rows
    landed = wait_for(lambda: stack.query(
        "SELECT DISTINCT agent FROM events WHERE run_id = {r:String}", r=own_id), 60,
        what=f"the bound agent's own run {own_id}")
    assert landed == [(AGENT,)], landed
    assert stack.query("SELECT count() FROM events WHERE run_id = {r:String}",
                       r=other_id) == [(0,)]
    # a key bound to both agents records as either
    both_id, both = _otel_spans("triage-bot", budget_usd=None, close=True)
    assert _export(stack, both, key="multi").rejected_spans == 0
    assert wait_for(lambda: stack.query(
        "SELECT DISTINCT agent FROM events WHERE run_id = {r:String}", r=both_id), 60,
        what=f"the two-agent key's run {both_id}") == [("triage-bot",)]
