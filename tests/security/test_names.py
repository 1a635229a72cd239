"""Finding 6: names collided. Scopes are slash-separated, tenant first, so tenant
``acme/eu``'s breaker and safe mode were stored as tenant ``acme``'s (acme's key saw them),
and a guard for tenant ``acme``, agent ``eu/x`` obeyed ``acme/eu``'s safe mode.

Tenant and agent names may no longer hold a scope separator (``/`` or ``:``). Each attack
below is made where it would enter: raw events on Kafka (real Tansu, real sink, real
chdb), the SDK's identity, a key entry, the control guard and the stream worker's fold."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from agentledger.auth import KeyConfigError, entry_for, load_entries, new_key
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, InvalidEvent, Ledger
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas import topics
from agentledger.schemas.events import SCOPE_NAME_PATTERN, json_schema, parse_event
from agentledger.schemas.signals import agent_scope
from agentledger.streams.control_policy import load_policy
from agentledger.streams.fold import RunFolder
from tests.sinkutil import query, run_sink


class Capture(Ledger):
    """A Ledger that keeps what it would send (the events are then produced raw)."""

    def __init__(self, identity: AgentIdentity):
        super().__init__({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, identity)
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any], traceparent: str) -> None:
        self.events.append(event)


def _tool_run(tenant: str = "acme", agent: str = "triage-bot") -> list[dict[str, Any]]:
    ledger = Capture(AgentIdentity(tenant=tenant, agent=agent, agent_version="1",
                                   principal="svc"))
    with ledger.run("ticket_triage") as run, \
            run.tool_call("zendesk", "set_priority", mode="write", args={"id": 1}) as call:
        call.result("error", error_type="Timeout")
    return ledger.events


def _renamed(events: list[dict[str, Any]], **names: str) -> list[dict[str, Any]]:
    """The same run under another tenant/agent: what a producer with raw Kafka access (or
    an old SDK) would send; the hash chain does not matter, the name is refused first."""
    return [{**event, **names} for event in events]


def test_events_whose_names_hold_a_separator_go_to_the_dlq_and_never_land(settings: Settings):
    attack = _renamed(_tool_run(), tenant="acme/eu", agent="x")
    aimed = _renamed(_tool_run(), agent="eu/x")
    colon = _renamed(_tool_run(), agent="triage-bot:eu")
    good = _tool_run()
    producer = Producer(client_config(settings.kafka_bootstrap or "", "producer"))
    for event in (*attack, *aimed, *colon, *good):
        producer.produce(topics.EVENTS, orjson.dumps(event), event["run_id"].encode())
    assert producer.flush(30) == 0
    bad = len(attack) + len(aimed) + len(colon)
    run_sink(settings, bad + len(good))

    rejected = query(settings, "SELECT reason, error FROM rejected_events FINAL")
    assert len(rejected) == bad, rejected
    assert {reason for reason, _ in rejected} == {"schema"}
    errors = [error for _, error in rejected]
    assert sum("tenant: " in e and "'acme/eu' contains '/'" in e for e in errors) == len(attack)
    assert sum("agent: " in e and "'eu/x' contains '/'" in e for e in errors) == len(aimed)
    assert sum("contains ':'" in e for e in errors) == len(colon)
    # acme's rows are acme's own run only: nothing of "acme/eu" or of agent "eu/x"
    stored = query(settings, "SELECT tenant, agent, count() FROM events FINAL "
                             "GROUP BY tenant, agent")
    assert stored == [("acme", "triage-bot", len(good))], stored


def test_the_stream_worker_decides_nothing_on_such_names():
    """The fold reads raw events before the sink does: it must not give tenant "acme/eu"
    a say in scope "acme/eu/x" (= tenant acme, agent eu/x)."""
    folder = RunFolder(load_policy())
    payloads = [orjson.dumps(e) for e in _renamed(_tool_run(), tenant="acme/eu", agent="x")]
    out = folder.fold(payloads)
    assert out.skipped == len(payloads) and not out.facts and not folder.runs
    assert not folder.fold([orjson.dumps(e) for e in _tool_run()]).skipped  # good ones fold


def test_the_sdk_refuses_an_identity_that_holds_a_separator():
    for tenant, agent, field in (("acme/eu", "x", "tenant"), ("acme", "eu/x", "agent"),
                                 ("acme", "bot:1", "agent")):
        with pytest.raises(InvalidEvent, match=rf"identity\.{field}: .*contains"):
            Capture(AgentIdentity(tenant=tenant, agent=agent, agent_version="1",
                                  principal="svc"))


def test_a_key_entry_for_such_a_tenant_is_refused_with_its_place(settings: Settings):
    entry = entry_for("eu-reader", new_key(), ["acme"]).model_dump()
    for field, value in (("tenants", ["acme/eu"]), ("agents", ["acme/eu/x"]),
                         ("agents", ["acme:eu/x"])):
        bad = Settings(data_dir=settings.data_dir, api_keys=[{**entry, field: value}])
        with pytest.raises(KeyConfigError, match=rf"key 0: {field}: .*contains '[/:]'"):
            load_entries(bad)
    # an agent is named bare or as tenant/agent: one '/', between two good names
    fine = Settings(data_dir=settings.data_dir,
                    api_keys=[{**entry, "agents": ["refund-agent", "acme/refund-agent"]}])
    assert load_entries(fine)[0].agents == ["refund-agent", "acme/refund-agent"]
    operator = Settings(data_dir=settings.data_dir, api_keys=[{**entry, "tenants": ["*"]}])
    assert load_entries(operator)[0].tenants == ["*"]


def test_a_guard_for_acme_cannot_be_aimed_at_acme_eu_s_scope(broker: str):
    assert agent_scope("acme/eu", "x") == agent_scope("acme", "eu/x")  # why names matter
    follower = ControlFollower(broker).start()
    try:
        with pytest.raises(ValueError, match="'eu/x' contains '/'"):
            SafeModeGuard(follower, "acme", "eu/x")
        with pytest.raises(ValueError, match="'acme/eu' contains '/'"):
            SafeModeGuard(follower, "acme/eu", "x")
        assert SafeModeGuard(follower, "acme", "x").scope == "acme/x"
    finally:
        follower.close()


def test_the_json_schema_says_so():
    props = json_schema()["$defs"]["ToolCallEvent"]["properties"]
    for field in ("tenant", "agent"):
        assert props[field]["pattern"] == SCOPE_NAME_PATTERN
        assert "'/'" in props[field]["description"]
    event = _tool_run()[0]
    assert parse_event(event).tenant == "acme"
