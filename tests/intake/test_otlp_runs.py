"""The OTLP → ledger runs: totals, ids, the hash chain, closing runs, refusals, decoding and
the intakes' commit points (pure code; the mapping of each span: test_otlp_mapping.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentledger.intake.mapping import MappingError, map_span
from agentledger.intake.runs import Assembler, build_run, event_id
from agentledger.intake.spans import PayloadError, SpanRecord, decode_json, decode_protobuf
from agentledger.schemas.integrity import verify_chain
from tests.otlputil import (
    NONE,
    T0,
    agent,
    record,
    request_bytes,
    request_json,
    run_of,
    run_spans,
    shape,
)

# -- runs, totals, ids, chain -----------------------------------------------------------


def test_tokens_count_on_model_spans_only_never_the_agents_rollup():
    events = run_of([agent({"gen_ai.operation.name": "invoke_agent",
                            "gen_ai.usage.input_tokens": 999_999}),
                     record({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10,
                             "gen_ai.usage.cost": 0.5}, start=T0 + 1, span_id="3" * 16),
                     record({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5,
                             "gen_ai.usage.cost": 0.25}, start=T0 + 2)])
    totals = events[-1]["body"]["totals"]
    assert (totals["tokens_in"], totals["model_calls"], totals["cost_usd"]) == (15, 2, 0.75)


def test_trace_id_is_kept_seq_by_start_time_and_chain_in_jcs_at_intake():
    late, early = (record({"gen_ai.operation.name": "chat"}, start=T0 + 50, span_id="3" * 16),
                   record({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"},
                          start=T0 + 10))
    events = run_of([late, agent({"gen_ai.operation.name": "invoke_agent"}), early])
    assert [e["event_type"] for e in events] == [
        "run.started", "tool.call", "tool.result", "model.call", "run.finished"]
    assert {e["trace_id"] for e in events} == {"a" * 32} and events[0]["run_id"] == "a" * 32
    assert [e["seq"] for e in events] == list(range(5))
    assert {(e["canon"], e["origin"]) for e in events} == {("jcs", "otlp_http")}
    assert verify_chain(events).ok


def test_event_ids_are_deterministic_and_uuid7_shaped():
    first = event_id("a" * 32, "b" * 16, "tool.call", T0)
    assert first == event_id("a" * 32, "b" * 16, "tool.call", T0)
    assert first != event_id("a" * 32, "b" * 16, "tool.result", T0)
    spans = [agent({"gen_ai.operation.name": "invoke_agent"}),
             record({"gen_ai.operation.name": "chat"}, start=T0 + 1)]
    assert run_of(spans) == run_of(list(reversed(spans)))  # order of arrival does not matter


def test_a_run_closes_after_root_and_grace_and_late_or_repeated_spans_are_told_apart():
    now = [0.0]
    assembler = Assembler(origin="otlp_kafka", grace_s=2, idle_s=30, clock=lambda: now[0])
    child = record({"gen_ai.operation.name": "chat"}, start=T0 + 1)
    assembler.add([child], "acme")
    now[0] = 29
    assert assembler.due() == []  # no root yet, not idle for 30 s
    assembler.add([agent({"gen_ai.operation.name": "invoke_agent"})], "acme")
    now[0] = 30.5
    assert assembler.due() == []  # root seen, grace not over
    assert assembler.open_spans == 2
    now[0] = 31.5
    (run,) = assembler.due()
    assert len(run.events) == 3 and assembler.open_spans == 0
    again = assembler.add([child], "acme")
    assert (again.duplicates, again.rejected) == (1, [])
    late = assembler.add([record({"gen_ai.operation.name": "chat"}, span_id="4" * 16)], "acme")
    assert [r.reason for r in late.rejected] == ["late_span"]


def test_rootless_trace_closes_when_idle_and_unknown_traces_are_not_runs():
    now = [0.0]
    assembler = Assembler(origin="otlp_kafka", grace_s=2, idle_s=30, clock=lambda: now[0])
    assembler.add([record({"gen_ai.operation.name": "chat"})], "acme")
    other = record({"http.method": "GET"}, parent=None)
    other.trace_id = "b" * 32
    assembler.add([other], "acme")
    now[0] = 31
    runs = {r.trace_id: r for r in assembler.due()}
    assert runs["b" * 32].events == [] and len(runs["a" * 32].events) == 3


def test_own_sdk_spans_are_skipped_and_tenant_is_the_intakes():
    own = record({"gen_ai.operation.name": "chat"})
    own.scope = "agentledger"
    assert Assembler(origin="otlp_http").add([own], "acme").skipped == 1
    events = run_of([agent({"gen_ai.operation.name": "invoke_agent", "tenant": "evil"},
                           resource={"service.name": "bot", "tenant": "evil",
                                     "deployment.environment.name": "staging"})],
                    tenant="globex")
    assert {e["tenant"] for e in events} == {"globex"} and events[0]["env"] == "staging"


@pytest.mark.parametrize("change, reason", [
    ({"trace_id": "0" * 32}, "invalid_trace_id"), ({"span_id": "12"}, "invalid_span_id"),
    ({"parent_span_id": "12"}, "invalid_parent_span_id"), ({"start_ns": 5}, "invalid_time")])
def test_bad_spans_are_refused_with_a_reason(change: dict[str, Any], reason: str):
    span = record({"gen_ai.operation.name": "chat"})
    for key, value in change.items():
        setattr(span, key, value)
    from agentledger.intake.spans import check

    span.problem = check(span)
    with pytest.raises(MappingError) as caught:
        map_span(span, "acme", NONE)
    assert caught.value.reason == reason
    bad_tokens = record({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "many"})
    with pytest.raises(MappingError, match="input_tokens"):
        map_span(bad_tokens, "acme", NONE)


def test_openinference_and_openllmetry_shapes_map_to_the_same_events_as_genai():
    def spans(conv: str) -> list[SpanRecord]:
        run = {"genai": {"gen_ai.operation.name": "invoke_agent"},
               "oi": {"openinference.span.kind": "AGENT"},
               "tl": {"traceloop.span.kind": "workflow"}}[conv]
        model = {"genai": {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                           "gen_ai.request.model": "gpt-4o-mini",
                           "gen_ai.usage.input_tokens": 100,
                           "gen_ai.usage.output_tokens": 10},
                 "oi": {"openinference.span.kind": "LLM", "llm.provider": "openai",
                        "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": 100,
                        "llm.token_count.completion": 10},
                 "tl": {"llm.request.type": "chat", "gen_ai.system": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.prompt_tokens": 100,
                        "gen_ai.usage.completion_tokens": 10}}[conv]
        tool = {"genai": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm"},
                "oi": {"openinference.span.kind": "TOOL", "tool.name": "crm"},
                "tl": {"traceloop.span.kind": "tool", "traceloop.entity.name": "crm"}}[conv]
        return [agent(run), record(model, start=T0 + 1, span_id="3" * 16),
                record(tool, start=T0 + 2, status=2)]

    genai = shape(run_of(spans("genai")))
    assert shape(run_of(spans("oi"))) == genai
    assert shape(run_of(spans("tl"))) == genai
    assert [t for t, _, _ in genai] == ["run.started", "model.call", "tool.call", "tool.result",
                                        "run.finished"]


def test_otlp_json_and_protobuf_decode_to_the_same_spans():
    _, sdk_spans = run_spans()
    proto = decode_protobuf(request_bytes(sdk_spans))
    assert decode_json(request_json(sdk_spans)) == proto
    assert build_run("acme", [map_span(s, "acme", NONE) for s in proto], "otlp_kafka")
    snake = orjson.loads(request_json(sdk_spans).replace(b"scopeSpans", b"scope_spans"))
    snake["resourceSpans"][0]["scope_spans"][0]["spans"][0]["status"] = {
        "code": "STATUS_CODE_ERROR"}
    (first, *_), = [decode_json(orjson.dumps(snake))]
    assert first.status_code == 2 and first.span_id == proto[0].span_id


@pytest.mark.parametrize("body, words", [
    (b"[1]", "expected an object"), (b"{]", "not JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
     "ValueError"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": 5}]}]}]}', "TypeError")])
def test_bad_otlp_json_is_refused_whole_with_a_reason(body: bytes, words: str):
    with pytest.raises(PayloadError, match=words):
        decode_json(body)
    bad_id = decode_json(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": '
                         b'"zz", "spanId": "0102030405060708"}]}]}]}')
    assert bad_id[0].problem.startswith("invalid_trace_id")


def test_kafka_commit_point_never_splits_a_run_and_revoked_partitions_forget_open_traces():
    from agentledger.intake.kafka_loop import commit_point

    assert commit_point(10, None, []) == (10, [])
    assert commit_point(10, 4, []) == (4, [])  # an open trace began at offset 4
    # a closed run over 6..12 would be split at 10: back to 6; one over 2..3 is forgotten
    assert commit_point(10, None, [(2, 3), (6, 12)]) == (6, [(6, 12)])
    assert commit_point(10, None, [(5, 8), (7, 11)]) == (5, [(5, 8), (7, 11)])  # chained
    assembler = Assembler(origin="otlp_kafka")
    one = record({"gen_ai.operation.name": "chat"})
    other = record({"gen_ai.operation.name": "chat"})
    other.trace_id = "b" * 32
    assembler.add([one], "acme", (0, 5))
    assembler.add([other], "acme", (1, 7))
    assert assembler.open_first_offsets() == {0: 5, 1: 7}
    assert assembler.discard_partitions({0}) == 1
    assert assembler.open_first_offsets() == {1: 7}


def test_http_intake_sends_unacknowledged_events_again_and_counts_them_as_backlog():
    from agentledger.intake.http_intake import HttpIntake
    from agentledger.intake.publisher import PublishFailed

    class FlakyKafka:
        def __init__(self) -> None:
            self.fail, self.sent = True, []

        def publish(self, events: list) -> int:
            self.sent.append([e["event_id"] for e in events])
            return len(events)

        def flush(self, timeout_s: float) -> None:
            if self.fail:
                raise PublishFailed("broker down")

    intake = HttpIntake.__new__(HttpIntake)  # no thread, no Kafka: the closing logic alone
    intake.assembler = Assembler(origin="otlp_http", grace_s=0)
    intake.publisher = FlakyKafka()
    intake._pending = []
    intake.assembler.add([agent({"gen_ai.operation.name": "invoke_agent"})], "acme")
    assert intake.close_due() == 0 and intake.backlog == 2
    intake.publisher.fail = False
    assert intake.close_due() == 2 and intake.backlog == 0
    first, again = intake.publisher.sent
    assert first == again  # the same events, the same ids
