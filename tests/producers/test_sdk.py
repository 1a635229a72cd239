"""The SDK against a real broker: envelope, OTel ids, headers, delivery errors, buffer."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentledger.core.kafka import client_config
from agentledger.producers.emitter import BufferFull, DeliveryFailed, InvalidEvent, Ledger
from agentledger.schemas import topics
from agentledger.schemas.events import parse_event_json
from agentledger.schemas.integrity import verify_chain
from tests.conftest import consume_all

pytestmark = pytest.mark.integration


def test_run_emits_a_valid_chained_run_with_otel_ids(ledger, broker):
    exporter = InMemorySpanExporter()
    # The Ledger installed the SDK's provider; add an exporter to observe its spans.
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))

    with ledger.run("ticket_triage", inputs={"ticket": 1}, max_cost_usd=1.0) as run:
        run.model_call(provider="openai", model="gpt-4o", model_version="x", role="planner",
                       tokens_in=1000, tokens_out=100, latency_ms=250)
        run.retrieval(source="kb", index_version="v1", documents={"d1": "text"})
        with run.tool_call("crm", "update", mode="write", args={"id": 7}) as call:
            call.result("ok", side_effect={"resource": "t/7", "op": "update"}, verified=True)
    assert ledger.flush() == 6

    messages = consume_all(broker, topics.EVENTS, 6)
    events = [orjson.loads(m.value()) for m in messages]
    assert [e["event_type"] for e in events] == [
        "run.started", "model.call", "retrieval", "tool.call", "tool.result", "run.finished"]
    assert [e["seq"] for e in events] == list(range(6))
    assert verify_chain(events).ok
    for message, ev in zip(messages, events, strict=True):
        parse_event_json(message.value())
        assert message.key() == run.run_id.encode()
        headers = dict(message.headers())
        assert headers["traceparent"].decode().startswith(f"00-{ev['trace_id']}-{ev['span_id']}-")

    spans = {f"{s.context.span_id:016x}": s for s in exporter.get_finished_spans()}
    run_span = spans[events[0]["span_id"]]
    assert run_span.name == "agent.run ticket_triage"
    tool_span = spans[events[3]["span_id"]]
    assert events[4]["span_id"] == events[3]["span_id"]  # call and result share the span
    assert tool_span.parent.span_id == run_span.context.span_id
    assert events[3]["parent_span_id"] == events[0]["span_id"]
    assert {f"{s.context.trace_id:032x}" for s in spans.values()} == {events[0]["trace_id"]}
    # priced from the versioned table, and the totals add up
    assert events[1]["body"]["price_version"] == "2026-11-01"
    assert events[1]["body"]["cost_usd"] == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert events[5]["body"]["totals"]["cost_usd"] == events[1]["body"]["cost_usd"]
    assert events[5]["body"]["outcome"] == "success"


def test_exception_in_run_records_failure_and_propagates(ledger, broker):
    with pytest.raises(ZeroDivisionError), ledger.run("w") as run, run.tool_call(
            "calc", "divide", mode="read", args={}):
        1 / 0  # noqa: B018
    ledger.flush()
    events = [orjson.loads(m.value()) for m in consume_all(broker, topics.EVENTS, 4)]
    assert events[2]["body"]["status"] == "error"
    assert events[2]["body"]["error_type"] == "ZeroDivisionError"
    assert events[3]["body"]["outcome"] == "failure"


def test_invalid_input_raises_and_sends_nothing(ledger):
    with ledger.run("w") as run:
        sent = ledger.sent
        with pytest.raises(InvalidEvent, match="tokens_in"):
            run.model_call(provider="openai", model="gpt-4o", model_version="x", role="p",
                           tokens_in=-1, tokens_out=1, latency_ms=1)
        assert ledger.sent == sent


def test_delivery_errors_surface_on_flush(identity):
    dead = client_config("127.0.0.1:1", "producer", **{"message.timeout.ms": 300})
    led = Ledger(dead, identity)
    with led.run("w"):
        pass
    with pytest.raises(DeliveryFailed) as info:
        led.flush(timeout_s=10)
    assert len(info.value.failures) == 2


def test_bounded_buffer_raises_buffer_full(identity):
    dead = client_config("127.0.0.1:1", "producer", **{"queue.buffering.max.messages": 5})
    led = Ledger(dead, identity, buffer_timeout_s=0.2)
    with pytest.raises(BufferFull, match="buffer full"), led.run("w") as run:
        for i in range(10):
            with run.tool_call("t", "a", mode="read", args={"i": i}):
                pass
