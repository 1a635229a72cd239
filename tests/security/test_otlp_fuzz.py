"""Finding 3: one OTLP span stopped all OTLP intake. Fuzzed span attributes, pure (no Kafka).

Property, for protobuf and OTLP/JSON alike: the decoder, the mapping and the run closer
never raise out, and every span ends in exactly one place: a run whose events were built
(and whose hash chain verifies), or a refusal with a reason (a whole request refused is a
refusal of each of its spans). Attributes are drawn from what an attacker can send: huge
and negative integers, NaN and ±Infinity, bytes, nesting deeper than the limit, long
strings, values of the wrong type, invalid UTF-8, lone surrogates, empty or missing ids.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from agentledger.core.redaction import REDACTED, Redactor
from agentledger.core.settings import Settings
from agentledger.intake.publisher import CloserBeat, closer_rows
from agentledger.intake.runs import Assembler
from agentledger.intake.spans import (
    MAX_DEPTH,
    PayloadError,
    SpanRecord,
    decode_json,
    decode_protobuf,
)
from agentledger.queries.pipeline import HealthLimits, problems
from agentledger.schemas.canonical import canonicalize
from agentledger.schemas.events import parse_event
from agentledger.schemas.integrity import verify_chain
from tests.otlputil import T0, agent, record

INT64 = st.integers(-(2**63), 2**63 - 1)
HUGE = st.one_of(INT64, st.integers(2**53 - 3, 2**53 + 3), st.integers(-(2**70), 2**70))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
LEAVES = st.one_of(INT64, FLOATS, st.booleans(), st.binary(max_size=64),
                   st.text(max_size=40), st.text(max_size=1).map(lambda c: c * 20_000))


def deep(levels: int, leaf: Any) -> Any:
    for i in range(levels):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


VALUES = st.one_of(
    LEAVES,
    st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                               st.dictionaries(st.text(max_size=8), kids,
                                                               max_size=3)), max_leaves=8),
    # deeper still is refused by protobuf's own depth limit (whole request, 400)
    st.builds(deep, st.integers(MAX_DEPTH - 2, MAX_DEPTH + 3), LEAVES))
NAMES = st.sampled_from(["gen_ai.tool.call.arguments", "gen_ai.usage.input_tokens",
                         "gen_ai.usage.output_tokens", "gen_ai.usage.cost", "gen_ai.tool.name",
                         "gen_ai.request.model", "gen_ai.provider.name", "error.type",
                         "agentledger.tool.mode", "session.id", "input.value", "x"])
ATTRS = st.dictionaries(NAMES, VALUES, max_size=5)
ARGS = st.recursive(st.one_of(HUGE, st.text(max_size=10), st.booleans(), st.none(),
                              st.floats(allow_nan=False, allow_infinity=False)),
                    lambda kids: st.one_of(st.lists(kids, max_size=3),
                                           st.dictionaries(st.text(max_size=6), kids,
                                                           max_size=3)), max_leaves=10)
IDS = st.sampled_from([b"", b"\x00" * 8, b"\x01" * 7, None])


def any_value(value: Any) -> AnyValue:
    out = AnyValue()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            out.int_value = value
        else:
            out.string_value = str(value)
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, str):
        out.string_value = value.encode("utf-8", "replace").decode("utf-8")
    elif isinstance(value, list):
        out.array_value.values.extend(any_value(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(KeyValue(key=k.encode("utf-8", "replace").decode(),
                                                value=any_value(v)) for k, v in value.items())
    return out


def json_value(value: Any) -> Any:
    """OTLP/JSON AnyValue; big ints beyond 64 bits and odd spellings on purpose."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value) if abs(value) < 2**64 else value}
    if isinstance(value, float):
        return {"doubleValue": value if value == value and abs(value) != float("inf")
                else str(value).replace("inf", "Infinity").replace("nan", "NaN")}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    return {"kvlistValue": {"values": [{"key": k, "value": json_value(v)}
                                       for k, v in value.items()]}}


WRONG_TYPES = st.sampled_from([
    {"intValue": "12abc"}, {"intValue": 1.5}, {"intValue": [1]}, {"doubleValue": "fast"},
    {"boolValue": "false"}, {"bytesValue": "!!!not base64"}, {"stringValue": 5},
    {"arrayValue": {"values": 7}}, {"kvlistValue": {"values": [{"key": 3, "value": {}}]}},
    "just a string", {"intValue": "9" * 40}])


def trace(attrs: dict[str, Any], args: Any, bad_id: Any, op: str) -> list[dict[str, Any]]:
    """agent root, a fuzzed tool/model span, a span with odd ids: as plain specs."""
    root = {"span_id": b"\x01" * 8, "parent": b"", "attrs": {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "fuzz"}}
    fuzzed = {"span_id": b"\x02" * 8, "parent": b"\x01" * 8, "attrs": {
        "gen_ai.operation.name": op, **attrs,
        **({"gen_ai.tool.call.arguments": json.dumps(args)} if args is not None else {})}}
    odd = {"span_id": bad_id, "parent": b"\x01" * 8, "attrs": {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}}
    return [root, fuzzed, odd]


def to_protobuf(spans: list[dict[str, Any]], trace_id: bytes) -> bytes | None:
    """The request's bytes; None when protobuf itself will not build so deep a value."""
    try:
        return _to_protobuf(spans, trace_id)
    except DecodeError:
        return None


def _to_protobuf(spans: list[dict[str, Any]], trace_id: bytes) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for spec in spans:
        s = scope.spans.add()
        s.trace_id = trace_id
        if spec["span_id"] is not None:
            s.span_id = spec["span_id"]
        s.parent_span_id = spec["parent"]
        s.name = "span"
        s.start_time_unix_nano, s.end_time_unix_nano = T0, T0 + 10**8
        s.attributes.extend(KeyValue(key=k, value=any_value(v))
                            for k, v in spec["attrs"].items())
    return request.SerializeToString()


def to_json(spans: list[dict[str, Any]], trace_id: bytes, wrong: Any) -> bytes:
    out = []
    for spec in spans:
        span: dict[str, Any] = {
            "traceId": trace_id.hex(), "parentSpanId": spec["parent"].hex(), "name": "span",
            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10**8),
            "attributes": [{"key": k, "value": json_value(v)} for k, v in spec["attrs"].items()]}
        if spec["span_id"] is not None:
            span["spanId"] = spec["span_id"].hex()
        out.append(span)
    out[1]["attributes"].append({"key": "wrong", "value": wrong})
    # json (not orjson): integers beyond 64 bits and lone surrogates stay as written
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": out}]}]}).encode()


def account(spans: list[SpanRecord], assembler: Assembler) -> None:
    """Every span in exactly one place; closing never raises; built runs verify."""
    result = assembler.add(spans, "acme")
    assert all(r.reason and r.message for r in result.rejected), result.rejected
    placed = result.accepted + result.duplicates + result.skipped + len(result.rejected)
    assert placed == len(spans), (placed, len(spans), result)
    closed = assembler.due(force=True)
    assert sum(run.spans for run in closed) == result.accepted
    for run in closed:
        if run.rejected:
            assert not run.events and len(run.rejected) == run.spans, run.rejected
            assert all(r.reason == "run_unbuildable" for r in run.rejected)
        elif run.events:
            assert verify_chain(run.events).ok
            for event in run.events:
                parse_event(event)
                canonicalize(event["body"])
                orjson.dumps(event)  # what the publisher sends


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])


@FUZZ
@given(attrs=ATTRS, args=st.one_of(st.none(), ARGS), bad_id=IDS,
       op=st.sampled_from(["execute_tool", "chat"]), trace_id=st.sampled_from(
           [b"\xab" * 16, b"", b"\x00" * 16]))
def test_fuzzed_protobuf_spans_land_or_are_refused_and_never_stop_the_intake(
        attrs: dict[str, Any], args: Any, bad_id: Any, op: str, trace_id: bytes) -> None:
    body = to_protobuf(trace(attrs, args, bad_id, op), trace_id)
    assume(body is not None)
    assert body is not None
    try:
        spans = decode_protobuf(body)
    except PayloadError as exc:  # the whole request refused (400 / DLQ), with the reason
        assert str(exc)
        return
    assert len(spans) == 3
    account(spans, Assembler(origin="otlp_http", grace_s=0))


@FUZZ
@given(attrs=ATTRS, args=st.one_of(st.none(), ARGS), bad_id=IDS,
       op=st.sampled_from(["execute_tool", "chat"]), wrong=WRONG_TYPES,
       surrogate=st.booleans())
def test_fuzzed_otlp_json_spans_land_or_are_refused_and_never_stop_the_intake(
        attrs: dict[str, Any], args: Any, bad_id: Any, op: str, wrong: Any,
        surrogate: bool) -> None:
    if surrogate:
        attrs = {**attrs, "x": "lone \udc80 surrogate"}
    body = to_json(trace(attrs, args, bad_id, op), b"\xab" * 16, wrong)
    try:
        spans = decode_json(body)
    except PayloadError as exc:
        assert str(exc)
        return
    assert len(spans) == 3
    assert spans[1].problem, "a wrong-typed attribute value refuses its span"
    account(spans, Assembler(origin="otlp_kafka", grace_s=0))


def test_the_reported_poison_lands_with_its_big_integer_kept_exactly_as_a_string() -> None:
    """The reported attack: a tool argument above 2**53 killed the closer for everyone."""
    assembler = Assembler(origin="otlp_http", grace_s=0)
    tool = record({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm",
                   "gen_ai.tool.call.arguments": '{"n": 12345678901234567890, "m": -3}'})
    result = assembler.add([agent({"gen_ai.operation.name": "invoke_agent"}), tool], "acme")
    assert result.accepted == 2 and not result.rejected, result
    (run,) = assembler.due()
    args = next(e["body"]["args"] for e in run.events if e["event_type"] == "tool.call")
    assert args == {"n": "12345678901234567890", "m": -3}
    assert verify_chain(run.events).ok


def test_a_run_that_cannot_be_built_is_refused_whole_and_the_next_run_still_closes() -> None:
    """Whatever slips past decoding (here: a value forced into a mapped body), the closer
    refuses that run's spans with the reason and goes on."""
    assembler = Assembler(origin="otlp_http", grace_s=0)
    assembler.add([agent({"gen_ai.operation.name": "invoke_agent"})], "acme")
    other = agent({"gen_ai.operation.name": "invoke_agent"})
    other.trace_id = "b" * 32
    assembler.add([other], "globex")
    poisoned = assembler._open[("acme", "a" * 32)]
    poisoned.spans["1" * 16].events.append(("retrieval", T0, {"x": float("nan")}))
    closed = {run.tenant: run for run in assembler.due()}
    assert [r.reason for r in closed["acme"].rejected] == ["run_unbuildable"]
    assert "NotCanonicalizable" in closed["acme"].rejected[0].message
    assert closed["globex"].events and verify_chain(closed["globex"].events).ok
    assert assembler.failed_runs == 1 and assembler.closed_runs == 1


def test_the_intake_redacts_with_the_configured_keys() -> None:
    """AGENTLEDGER_REDACT_KEYS reaches OTel spans as it reaches the SDK."""
    tool = record({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm",
                   "gen_ai.tool.call.arguments": '{"ticket": "T-9", "pin_code": "1234"}'})
    assembler = Assembler(origin="otlp_http", grace_s=0,
                          redactor=Redactor(Settings(redact_keys=["pin_code"]).redact_keys))
    assembler.add([agent({"gen_ai.operation.name": "invoke_agent"}), tool], "acme")
    (run,) = assembler.due()
    args = next(e["body"]["args"] for e in run.events if e["event_type"] == "tool.call")
    assert args == {"ticket": "T-9", "pin_code": REDACTED}


def test_a_silent_or_failing_closer_is_a_health_problem(tmp_path: Any) -> None:
    settings_ = Settings(data_dir=tmp_path / "data")
    assembler = Assembler(origin="otlp_http")
    beat = CloserBeat(settings_, "api", assembler)
    beat.beat(force=True)
    now = dt.datetime.now(dt.UTC)
    ((ts, component, instance, status, _lag, details),) = closer_rows(settings_, now)
    assert component == "otlp-closer" and status == "ok" and instance.startswith("api/")
    row = {"component": component, "instance": instance, "status": status,
           "age_s": (now - ts).total_seconds(), "details": details}
    assert problems([row], 0.0, HealthLimits(silent_s=30)) == []
    silent = problems([{**row, "age_s": 45.0}], 0.0, HealthLimits(silent_s=30))
    assert len(silent) == 1 and "no beat for 45s" in silent[0], silent
    assembler.failed_runs, assembler.last_failure = 1, "NotCanonicalizable: integer"
    beat.beat(force=True)
    ((_ts, _c, _i, status, _l, details),) = closer_rows(settings_, dt.datetime.now(dt.UTC))
    failing = problems([{**row, "status": status, "details": details}], 0.0, HealthLimits())
    assert status == "failing" and "1 runs could not be built" in failing[0], failing
    beat.withdraw()
    assert closer_rows(settings_, now) == []
