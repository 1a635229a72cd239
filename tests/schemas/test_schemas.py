"""Event models: every type round-trips; bad input is refused with the field named."""

from __future__ import annotations

import copy

import orjson
import pytest
from pydantic import ValidationError

from agentledger.schemas.events import EVENT_TYPES, parse_event, parse_event_json, validation_reason
from agentledger.schemas.export import JSON_DIR, generated

ENVELOPE = {
    "schema_version": 1,
    "event_id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "ts": "2026-11-24T10:00:00.123456Z",
    "trace_id": "a" * 32,
    "span_id": "b" * 16,
    "parent_span_id": None,
    "run_id": "run-1",
    "seq": 0,
    "tenant": "acme",
    "workspace": "default",
    "agent": "triage-bot",
    "agent_version": "1.0.0",
    "principal": "svc-triage",
    "on_behalf_of": "alice@example.com",
    "env": "prod",
    "prev_hash": "0" * 64,
    "hash": "1" * 64,
    "sig": None,
}
H = "2" * 64
BODIES = {
    "run.started": {"workflow": "ticket_triage", "inputs_hash": H, "input_ref": "s3://x",
                    "prompt_template": "triage", "prompt_version": "7",
                    "model_config": {"temperature": 0.2}, "policy_version": "12",
                    "budget": {"max_cost_usd": 1.5, "max_tool_calls": 10}},
    "model.call": {"provider": "openai", "model": "gpt-4o", "model_version": "2024-08-06",
                   "role": "planner", "tokens_in": 100, "tokens_out": 20, "cached_tokens": 0,
                   "cost_usd": 0.0012, "latency_ms": 350.5, "status": "ok"},
    "retrieval": {"source": "kb", "index_version": "v3", "doc_ids": ["d1"], "doc_hashes": [H]},
    "tool.call": {"tool": "crm", "action": "update", "mode": "write", "tool_version": "2.1",
                  "schema_hash": H, "args": {"id": 1}, "args_hash": H, "idempotency_key": "k"},
    "tool.result": {"tool": "crm", "status": "error", "error_type": "HTTP500",
                    "latency_ms": 12.0, "side_effect": {"resource": "t/1", "op": "update"},
                    "verified": False},
    "policy.decision": {"policy_id": "p1", "policy_version": "3", "rule": "amount > 100",
                        "decision": "escalate", "action": "refund 200 USD"},
    "approval.requested": {"approver": "lead", "action": "refund", "reason": None},
    "approval.resolved": {"approver": "lead", "decision": "approved", "latency_ms": 1000.0},
    "run.finished": {"outcome": "success", "error": None,
                     "totals": {"cost_usd": 0.01, "tokens_in": 5, "tokens_out": 6,
                                "model_calls": 1, "tool_calls": 2, "duration_ms": 10.0}},
    "human.override": {"who": "alice", "what": "forced retry", "why": "customer VIP"},
    "rollback": {"who": "svc", "what": "undo update", "why": "HTTP500"},
}


def event(kind: str = "tool.call", **changes: object) -> dict:
    ev = copy.deepcopy({**ENVELOPE, "event_type": kind, "body": BODIES[kind]})
    ev.update(changes)
    return ev


def test_every_event_type_has_an_example_and_round_trips():
    assert set(BODIES) == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        parsed = parse_event_json(orjson.dumps(event(event_type)))
        assert parsed.event_type == event_type
        again = parse_event(parsed.model_dump(mode="json", by_alias=True))
        assert again == parsed


def test_run_started_keeps_model_config_name_on_the_wire():
    parsed = parse_event(event("run.started"))
    assert parsed.model_dump(by_alias=True)["body"]["model_config"] == {"temperature": 0.2}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"ts": "yesterday"}, "ts", "schema"),
        ({"ts": "2026-11-24T10:00:00"}, "ts", "schema"),  # naive: no timezone
        ({"ts": "1970-01-01T00:00:00Z"}, "ts", "schema"),
        ({"trace_id": "abc"}, "trace_id", "schema"),
        ({"span_id": "B" * 16}, "span_id", "schema"),  # uppercase hex is not canonical
        ({"event_id": "not-a-uuid"}, "event_id", "schema"),
        ({"seq": -1}, "seq", "schema"),
        ({"seq": "1"}, "seq", "schema"),  # strict: no string → int coercion
        ({"event_type": "tool.exploded"}, "event_type", "unknown_event_type"),
        ({"schema_version": 2}, "schema_version", "unsupported_schema_version"),
        ({"surprise": 1}, "surprise", "schema"),
    ],
)
def test_bad_envelopes_are_rejected_naming_the_field(change, field, reason):
    with pytest.raises(ValidationError) as info:
        parse_event(event(**change))
    got_reason, message = validation_reason(info.value)
    assert got_reason == reason
    assert field in message


@pytest.mark.parametrize(
    ("event_type", "body_change", "field"),
    [
        ("model.call", {"tokens_in": -5}, "tokens_in"),
        ("model.call", {"cost_usd": -0.01}, "cost_usd"),
        ("tool.call", {"mode": "delete"}, "mode"),
        ("tool.result", {"status": "weird"}, "status"),
        ("retrieval", {"doc_hashes": []}, "doc_ids and doc_hashes"),
        ("run.finished", {"outcome": "meh"}, "outcome"),
    ],
)
def test_bad_bodies_are_rejected_naming_the_field(event_type, body_change, field):
    ev = event(event_type)
    ev["body"].update(body_change)
    with pytest.raises(ValidationError) as info:
        parse_event(ev)
    assert field in validation_reason(info.value)[1]


def test_committed_json_schema_files_match_the_models():
    expected = generated()
    on_disk = {p.name: p.read_text() for p in JSON_DIR.glob("*.json")}
    assert on_disk == expected, "run `python -m agentledger.schemas.export` and commit schemas/json"
