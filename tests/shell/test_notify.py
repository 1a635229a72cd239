"""Outgoing webhooks against a real Tansu broker and local HTTP receivers: a new approval
request reaches its queue's webhook signed; a receiver answering 500 twice gets it again
with backoff until it answers 200, and the delivery record holds the three attempts; SLA
warnings and breaches, a breaker opening and safe mode are announced (Slack format too);
a decided request gets no SLA notice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from agentledger.broker import EmbeddedBroker
from agentledger.core import signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.notify import config as cfg
from agentledger.notify.deliveries import DeliveryFollower, visible
from agentledger.notify.payloads import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Notice,
    sign,
    slack,
    verify,
)
from agentledger.notify.worker import Notifier
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.queries.common import Scope
from agentledger.schemas import topics
from agentledger.schemas.approvals import APPROVALS_TOPIC, ApprovalState, Vote
from agentledger.schemas.signals import ControlSignal
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
SECRET = "whsec_test_finance"
OPS_SECRET = "whsec_test_ops"


class Receiver:
    """A local webhook receiver: records every request, answers from a plan (then 200)."""

    def __init__(self, plan: list[int] | None = None):
        self.plan = list(plan or [])
        self.got: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.got.append({"headers": dict(self.headers), "body": body})
                code = owner.plan.pop(0) if owner.plan else 200
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"busy")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [r["headers"].get("X-AgentLedger-Event", "") for r in self.got]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("notify")
    finance, ops = Receiver([500, 500]), Receiver()
    path = tmp / "webhooks.yaml"
    path.write_text(yaml.safe_dump({
        "backoff_s": 0.2, "max_backoff_s": 1, "sla_warning_fraction": 0.5,
        "webhooks": [
            {"name": "finance-generic", "url": finance.url, "tenants": ["acme"],
             "queues": ["finance"], "events": [cfg.APPROVAL_REQUESTED], "secret": SECRET},
            {"name": "ops-slack", "url": ops.url, "format": "slack", "secret": OPS_SECRET,
             "events": [cfg.SLA_WARNING, cfg.SLA_BREACHED, cfg.BREAKER_OPENED,
                        cfg.SAFE_MODE_ENTERED]},
        ]}))
    key = signing.LedgerKey.generate()
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=tmp / "data", kafka_bootstrap=broker.bootstrap)
        ledger = Ledger.connect(broker.bootstrap, AgentIdentity(
            tenant="acme", agent="refund-agent", agent_version="1", principal="svc"))
        with Notifier(settings, broker.bootstrap, config_path=path, key=key,
                      trusted=key.keyring(), console_url="http://console.test") as notifier, \
                DeliveryFollower(broker.bootstrap, trusted=key.keyring()) as log:
            yield {"finance": finance, "ops": ops, "ledger": ledger, "key": key,
                   "bootstrap": broker.bootstrap, "log": log, "notifier": notifier}
        ledger.close()
        finance.server.shutdown()
        ops.server.shutdown()


def _request(world: dict[str, Any], approval_id: str, sla_s: float) -> str:
    with world["ledger"].run("refund") as run:
        run.emit("approval.requested", {
            "approver": "finance", "action": "stripe:create_refund", "approval_id": approval_id,
            "approvals_required": 2, "sla_s": sla_s, "expires_in_s": 3600,
            "reason": "refunds over 200 USD: two finance approvers",
            "args": {"amount": 450}})
        run_id = run.run_id
    world["ledger"].flush(10)
    return run_id


def _publish(world: dict[str, Any], topic: str, purpose: str, key: str, value: bytes) -> None:
    producer = Producer(client_config(world["bootstrap"], "producer"))
    producer.produce(topic, signing.sign_json(world["key"], purpose, value), key.encode())
    assert producer.flush(15) == 0


def test_signature_verifies_and_refuses_tampering_and_replays() -> None:
    body = b'{"type":"approval.requested"}'
    header = sign(b"s3cret", body)
    assert verify(b"s3cret", header, body)
    assert not verify(b"s3cret", header, body + b" ")
    assert not verify(b"other", header, body)
    old = sign(b"s3cret", body, timestamp=1_000_000)
    assert not verify(b"s3cret", old, body)
    assert verify(b"s3cret", old, body, now=1_000_100)


def test_slack_payload_is_a_slack_message() -> None:
    notice = Notice("approval.requested", "acme", "ap-1", "Approval needed: <refund>",
                    "2 x finance", queue="finance", link="http://c/console/inbox")
    message = slack(notice, "d1")
    assert message["text"].startswith("Approval needed: <refund>")
    section = message["blocks"][0]["text"]["text"]
    assert "&lt;refund&gt;" in section and "<http://c/console/inbox|" in section


def test_new_request_is_signed_and_retried_until_delivered(world: dict[str, Any]) -> None:
    finance: Receiver = world["finance"]
    _request(world, "ap-retry-1", sla_s=900)
    wait_for(lambda: len(finance.got) >= 3, 60,
             what=f"three posts to the finance hook (got {len(finance.got)})")
    for post in finance.got[:3]:
        assert verify(SECRET.encode(), post["headers"][SIGNATURE_HEADER], post["body"])
    assert len({p["headers"][DELIVERY_HEADER] for p in finance.got}) == 1
    payload = orjson.loads(finance.got[-1]["body"])
    assert payload["type"] == cfg.APPROVAL_REQUESTED and payload["queue"] == "finance"
    assert payload["subject"] == "ap-retry-1" and payload["data"]["args"] == {"amount": 450}
    log: DeliveryFollower = world["log"]

    def delivered() -> dict[str, Any] | None:
        shown = visible(log.records.values(), Scope(frozenset({"acme"})))
        done = [d for d in shown if d["subject"] == "ap-retry-1"
                and d["status"] == "delivered"]
        return done[0] if done else None

    record = wait_for(delivered, 30, what="the delivered record on agent.webhooks")
    assert [a["status_code"] for a in record["attempts"]] == [500, 500, 200]
    assert record["webhook"] == "finance-generic"
    assert visible(log.records.values(), Scope(frozenset({"globex"}))) == []
    assert len(finance.got) == 3  # delivered once: nothing sent again


def test_sla_breaker_and_safe_mode_are_announced(world: dict[str, Any]) -> None:
    ops: Receiver = world["ops"]
    _request(world, "ap-sla-1", sla_s=1.0)
    _request(world, "ap-decided-1", sla_s=5.0)
    now = datetime.now(UTC)
    decided = ApprovalState(approval_id="ap-decided-1", tenant="acme", agent="refund-agent",
                            run_id="r", approver_role="finance", approvals_required=1,
                            status="approved", version=1, requested_at=now, resolved_at=now,
                            votes=[Vote(approver="ana", decision="approve", reason="ok")])
    _publish(world, APPROVALS_TOPIC, signing.APPROVAL, "ap-decided-1", decided.to_json())
    for signal in (
        ControlSignal(kind="breaker", scope="acme/*/stripe", state="OPEN",
                      previous_state="CLOSED", version=1, ts=now, reason="error rate 60%"),
        ControlSignal(kind="safe_mode", scope="acme/refund-agent", rule="spend",
                      state="read_only", previous_state="normal", version=1, ts=now,
                      reason="spend over budget")):
        _publish(world, topics.CONTROL, signing.CONTROL, signal.key, signal.to_json())
    notifier: Notifier = world["notifier"]
    wait_for(lambda: "ap-decided-1" in notifier._decided, 30, what="the decision taken")
    assert "ap-decided-1" not in notifier.pending
    want = {cfg.SLA_WARNING, cfg.SLA_BREACHED, cfg.BREAKER_OPENED, cfg.SAFE_MODE_ENTERED}
    wait_for(lambda: want <= set(ops.kinds()), 60,
             what=f"every kind at the ops hook (got {ops.kinds()})")
    subjects = [orjson.loads(p["body"])["blocks"][1]["elements"][0]["text"] for p in ops.got]
    assert any("ap-sla-1" in text for text in subjects)
    assert not any("ap-decided-1" in text for text in subjects), "a decided request: SLA"
    for post in ops.got:
        assert verify(OPS_SECRET.encode(), post["headers"][SIGNATURE_HEADER], post["body"])
        assert "text" in orjson.loads(post["body"])
    assert ops.kinds().count(cfg.BREAKER_OPENED) == 1
