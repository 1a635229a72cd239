"""The SDK writes portable chains by default (issue 23): ``canon: "jcs"`` on every event,
the legacy form only for an event RFC 8785 cannot hold, and both verify in one run."""

from __future__ import annotations

import orjson

from agentledger.producers.emitter import Ledger
from agentledger.schemas import topics
from agentledger.schemas.integrity import verify_chain
from tests.conftest import consume_all


def test_sdk_events_are_jcs_and_a_value_jcs_cannot_hold_falls_back_to_legacy(
        broker: str, ledger: Ledger) -> None:
    with ledger.run("ticket_triage", inputs={"n": 1}) as run:
        with run.tool_call("zendesk", "update", mode="write", args={"id": 7}) as call:
            call.result("ok", latency_ms=1e-7)
        with run.tool_call("zendesk", "update", mode="write",
                           args={"snowflake": 2**63 - 1}) as call:  # beyond 2**53
            call.result("ok", latency_ms=2.0)
    ledger.flush(10)
    events = sorted((orjson.loads(m.value()) for m in consume_all(broker, topics.EVENTS, 6)),
                    key=lambda e: e["seq"])
    forms = [(e["event_type"], e.get("canon")) for e in events]
    assert forms == [("run.started", "jcs"), ("tool.call", "jcs"), ("tool.result", "jcs"),
                     ("tool.call", None), ("tool.result", "jcs"), ("run.finished", "jcs")], forms
    assert verify_chain(events).ok, verify_chain(events)
