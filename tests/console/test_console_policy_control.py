"""The console's Permissions, Control and Webhooks pages in a real browser against the
package's stack (tests/console/stack.py):

- the permissions page, read back from its DOM, gives every case of the policy's cases
  file the decision and rule the gate gives (and the one the case expects);
- hold and release through the Control page (an operator key) record ``human.override``
  events with the key's name and the signed override's ``by``; a tenant key gets no form;
- a local receiver gets a signed webhook for a new request, answers 500 twice, gets it
  again until it answers 200, and the Webhooks page and ``GET /v1/webhooks`` show the
  three attempts; a request pending before the sender started is read back from the
  ledger API with its SLA clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import yaml

from agentledger.auth import entry_for, new_key
from agentledger.core import signing
from agentledger.notify import config as cfg
from agentledger.notify.payloads import SIGNATURE_HEADER, verify
from agentledger.notify.worker import Notifier
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.gate import Gate
from agentledger.producers.tool_policy_cases import decide_case, load_cases
from agentledger.producers.tool_policy_files import DEFAULT_DIR
from agentledger.queries import permissions
from tests.console.stack import ConsoleStack
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
OPERATOR = "ops@oncall"
HELD_AGENT = "hold-test-agent"
SECRET = "whsec_console_test"


def _page(browser: Any, stack: ConsoleStack, key: str) -> Any:
    ctx = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto("/console/signin")
    page.fill("#key", key)
    page.click("main button[type=submit]")
    page.wait_for_url("**/console/inbox")
    return page


@pytest.fixture(scope="module")
def operator_key(stack: ConsoleStack) -> str:
    """An operator key added to the running API's key ring (the stack has none)."""
    key = new_key()
    stack.api.server.config.app.state.keys.add(entry_for(OPERATOR, key, ["*"]))
    return key


def test_permissions_page_agrees_with_every_policy_case(browser: Any,
                                                        stack: ConsoleStack) -> None:
    page = _page(browser, stack, stack.keys["ana"])
    page.goto("/console/permissions?tenant=acme")
    agents = page.evaluate("""() => [...document.querySelectorAll('section.agent')].map(s => ({
        agent: s.dataset.agent,
        cells: [...s.querySelectorAll('tr.cell')].map(r => ({
            uid: r.dataset.action,
            bands: [...r.querySelectorAll('li.band')].map(b => ({
                match: b.dataset.match, outcome: b.dataset.outcome, after: b.dataset.after,
                nokey: b.dataset.nokey, other: b.dataset.other}))}))}))""")
    assert agents, "no agent on the permissions page"
    matrix = {"tenant": "acme", "agents": [{"agent": a["agent"], "cells": [
        {"tool": c["uid"].split(":")[0], "action": c["uid"].split(":")[1], "bands": [
            {"match": json.loads(b["match"]), "outcome": json.loads(b["outcome"]),
             "after_approvals": json.loads(b["after"]),
             "without_idempotency_key": json.loads(b["nokey"]),
             "other_tenant": json.loads(b["other"])} for b in c["bands"]]}
        for c in a["cells"]]} for a in agents]}
    gate = Gate.load(None)
    cases = load_cases(DEFAULT_DIR / "cases.yaml")
    for case in cases:
        shown = permissions.decide(matrix, gate, case)
        real = decide_case(gate, case)
        assert (shown["decision"], shown["rule"]) == (real.decision, real.rule), case["name"]
        assert shown["decision"] == case["expect"], case["name"]
    refund = page.locator('section.agent[data-agent="refund-agent"] '
                          'tr[data-action="stripe:create_refund"]')
    assert "201 ≤ amount ≤ 800: 2 \u00d7 finance (refund-over-threshold)" in refund.inner_text()
    holders = page.locator('#roles tr[data-role="finance"]').inner_text()
    assert "ana@finance" in holders and "ben@finance" in holders
    assert "gil@globex" not in holders  # another tenant's approver
    assert page.locator("[data-version]").inner_text() == gate.version
    page.context.close()


def _overrides(stack: ConsoleStack) -> list[dict[str, Any]]:
    found = stack.query("SELECT body FROM events FINAL WHERE event_type = 'human.override' "
                        "AND tenant = 'acme' AND agent = {a:String} ORDER BY ts", a=HELD_AGENT)
    return [orjson.loads(row[0]) for row in found]


def test_hold_and_release_through_the_control_page(browser: Any, stack: ConsoleStack,
                                                   operator_key: str) -> None:
    reader = _page(browser, stack, stack.keys["ana"])
    reader.goto("/console/control")
    assert reader.locator("form#hold").count() == 0
    assert "needs an operator key" in reader.locator("main").inner_text()
    reader.context.close()

    page = _page(browser, stack, operator_key)
    forged = page.request.post(f"{stack.url}/console/control/override", form={
        "tenant": "acme", "agent": HELD_AGENT, "state": "halted", "reason": "no token"})
    assert forged.status == 403
    for state, reason in (("read_only", "incident 42: refunds look wrong"),
                          ("clear", "incident 42 resolved")):
        page.goto(f"/console/control?scope=acme/{HELD_AGENT}")
        page.fill("#hold-tenant", "acme")
        page.fill("#hold-agent", HELD_AGENT)
        page.select_option("#hold-state", state)
        page.fill("#hold-reason", reason)
        page.click("form#hold button[type=submit]")
        page.wait_for_load_state()
        flash = page.locator(".flash").inner_text()
        assert f"by {OPERATOR}" in flash and "human.override" in flash, flash
    found = wait_for(lambda: len(_overrides(stack)) >= 2 and _overrides(stack), 60,
                     what="two human.override events in the store")
    assert [o["who"] for o in found] == [OPERATOR, OPERATOR]
    assert [o["why"] for o in found] == ["incident 42: refunds look wrong",
                                         "incident 42 resolved"]
    assert "read_only" in found[0]["what"] and "cleared" in found[1]["what"]

    def shown_row() -> Any:
        page.goto(f"/console/control?scope=acme/{HELD_AGENT}")
        row = page.locator(f'tr[data-kind="override"][data-scope="acme/{HELD_AGENT}"]')
        return row.count() == 1 and row.get_attribute("data-state") == "cleared" and row
    row = wait_for(shown_row, 60, what="the released override on the Control page")
    assert OPERATOR in row.inner_text()
    page.context.close()


class _Receiver:
    def __init__(self, plan: list[int]):
        self.plan, self.got = list(plan), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.got.append((dict(self.headers), body))
                self.send_response(owner.plan.pop(0) if owner.plan else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _ask_approval(stack: ConsoleStack, approval_id: str, queue: str) -> None:
    ledger = Ledger.connect(stack.settings.kafka_bootstrap or "", AgentIdentity(
        tenant="acme", agent="triage-bot", agent_version="1", principal="svc-triage"))
    with ledger.run("escalate_ticket") as run:
        run.emit("approval.requested", {
            "approver": queue, "action": "zendesk:set_priority", "approval_id": approval_id,
            "approvals_required": 1, "sla_s": 600, "expires_in_s": 1800,
            "reason": "a lead confirms urgent tickets"})
    ledger.flush(15)


@pytest.fixture(scope="module")
def notifier(stack: ConsoleStack, operator_key: str) -> Iterator[tuple[Notifier, _Receiver]]:
    # pending before the sender starts: read back from the ledger API at start (backlog);
    # a queue no hook wants and nobody approves, so nothing else sees it
    _ask_approval(stack, "ap-before-start", "security-review")
    wait_for(lambda: stack.query("SELECT count() FROM events WHERE event_type = "
                                 "'approval.requested' AND run_id IN (SELECT run_id FROM "
                                 "events WHERE body LIKE '%ap-before-start%')")[0][0], 60,
             what="the early request in the store")
    receiver = _Receiver([500, 500])
    path = stack.settings.data_dir / "webhooks.yaml"  # where the API reads it too
    path.write_text(yaml.safe_dump({"backoff_s": 0.2, "webhooks": [
        {"name": "support-leads", "url": receiver.url, "tenants": ["acme"],
         "queues": ["support-lead"], "events": [cfg.APPROVAL_REQUESTED], "secret": SECRET}]}))
    bootstrap = stack.settings.kafka_bootstrap or ""
    with Notifier(stack.settings, bootstrap, config_path=path,
                  key=signing.ledger_key(stack.settings), api_url=stack.url,
                  api_key=operator_key) as running:
        yield running, receiver
    receiver.server.shutdown()


def test_a_webhook_retried_after_two_500s_shows_its_attempts(
        browser: Any, stack: ConsoleStack, notifier: tuple[Notifier, _Receiver]) -> None:
    _, receiver = notifier
    _ask_approval(stack, "ap-webhook-console-1", "support-lead")
    wait_for(lambda: len(receiver.got) >= 3, 60,
             what=f"three posts at the receiver (got {len(receiver.got)})")
    for headers, body in receiver.got:
        assert verify(SECRET.encode(), headers[SIGNATURE_HEADER], body)
        assert orjson.loads(body)["subject"] == "ap-webhook-console-1"

    def delivered() -> dict[str, Any] | None:
        answer = stack.call("GET", "/v1/webhooks", "ana").json()
        done = [d for d in answer["deliveries"] if d["subject"] == "ap-webhook-console-1"
                and d["status"] == "delivered"]
        return done[0] if done else None
    record = wait_for(delivered, 60, what="the delivered record in GET /v1/webhooks")
    assert [a["status_code"] for a in record["attempts"]] == [500, 500, 200]
    assert stack.call("GET", "/v1/webhooks", "globex").json()["deliveries"] == []

    page = _page(browser, stack, stack.keys["ana"])
    page.goto("/console/webhooks")
    card = page.locator('section.delivery[data-subject="ap-webhook-console-1"]')
    assert card.get_attribute("data-status") == "delivered"
    codes = [c.get_attribute("data-code") for c in card.locator("tr.attempt").all()]
    assert codes == ["500", "500", "200"]
    assert "support-leads" in page.locator("#hooks").inner_text()
    assert SECRET not in page.content() and "/hook" not in page.locator("#hooks").inner_text()
    page.context.close()


def test_requests_pending_before_the_sender_started_get_their_sla_clock(
        notifier: tuple[Notifier, _Receiver]) -> None:
    running, _ = notifier
    assert "ap-before-start" in running.rebuild()
    item = running.pending["ap-before-start"]
    assert (item["queue"], item["sla_s"], item["tenant"]) == ("security-review", 600, "acme")
