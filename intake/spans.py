"""OTLP trace payloads → flat :class:`SpanRecord` values, and per-span validity checks.

Protobuf is an ``ExportTraceServiceRequest`` (the Collector's Kafka exporter writes
``TracesData``, which is wire-identical); OTLP/JSON (hex ids, camelCase) is read straight
into the same :class:`SpanRecord` values. A payload that does not parse is refused whole
(:class:`PayloadError`); a span that parses but cannot be a ledger event (bad ids,
impossible times) is refused alone, so one bad span never sinks its batch.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# The event envelope accepts 2000..2100; a span outside it is refused, not clamped.
_NS_MIN: Final = 946_684_800 * 10**9
_NS_MAX: Final = 4_102_444_800 * 10**9
STATUS_ERROR: Final = 2
MAX_DEPTH: Final = 32
"""Deepest nesting of array/kvlist attribute values a span may carry; deeper is refused."""
MAX_SAFE_INT: Final = 2**53 - 1
"""The largest integer RFC 8785 (I-JSON) holds exactly; beyond it, integers become strings."""
_NON_FINITE: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}
OWN_SCOPE: Final = "agentledger"
"""Spans of the project's own SDK: their runs are in the ledger already (skipped)."""


class PayloadError(ValueError):
    """The payload is not an OTLP trace request in the stated encoding."""


class BadValue(ValueError):
    """An attribute value the ledger cannot hold in any form: its span is refused."""


def holdable(value: Any, depth: int = 0) -> Any:
    """``value`` in a form the events' canonical form (RFC 8785 JCS) can hold.

    Why here, at decode time: the run's hash chain is computed when the run closes, after
    the exporter was answered; a value JCS cannot hold found there would sink the whole
    run. So every value is made holdable as it arrives, and what cannot be is refused with
    its span (counted in the answer's ``partial_success``):

    - integers beyond ±(2**53 - 1) become their decimal string: exact (a double would
      round them), and how OTLP/JSON itself writes 64-bit integers. Real spans carry them
      (snowflake ids, nanosecond times, byte counts), so refusing would drop real tool calls;
    - NaN and ±Infinity become ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (proto3 JSON's
      spellings); bytes become hex; a string that is not valid Unicode (a lone surrogate)
      has the bad code points replaced by U+FFFD; a non-string object key becomes a string;
    - nesting deeper than :data:`MAX_DEPTH`, or a type JSON has no form for, raises
      :class:`BadValue` (the span is refused): no tracer writes such spans, and storing a
      cut-off tree would hash a value the agent never sent.
    """
    kind = type(value)
    if kind is str:
        return value if value.isascii() else _text(value)
    if kind is int:
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if kind is float:
        return value if math.isfinite(value) else _NON_FINITE.get(value, "NaN")
    if kind is bool or value is None:
        return value
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise BadValue(f"nested deeper than {MAX_DEPTH} levels")
        if kind is dict:
            return {(k if type(k) is str else holdable(str(k))): holdable(v, depth + 1)
                    for k, v in value.items()}
        return [holdable(v, depth + 1) for v in value]
    if kind is bytes:
        return value.hex()
    raise BadValue(f"{kind.__name__} is not a JSON value")


def _text(value: str) -> str:
    """``value``, with lone surrogates (not Unicode, so not UTF-8) replaced by U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


@dataclass(slots=True)
class SpanRecord:
    """One span with everything the mapping reads; ids as lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    exception_type: str | None = None
    problem: str | None = field(default=None, compare=False)
    """Why this span cannot become events (set by :func:`check`), or None."""

    def attr(self, *names: str) -> Any:
        """The first present span attribute of ``names`` (old and new names alike)."""
        for name in names:
            value = self.attributes.get(name)
            if value is not None and value != "":
                return value
        return None

    def res(self, *names: str) -> Any:
        """The first present resource attribute of ``names``."""
        for name in names:
            value = self.resource.get(name)
            if value is not None and value != "":
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        """The span as evidence for the DLQ (OTLP/JSON-like, ids in hex)."""
        return {"traceId": self.trace_id, "spanId": self.span_id,
                "parentSpanId": self.parent_span_id or "", "name": self.name,
                "startTimeUnixNano": str(self.start_ns), "endTimeUnixNano": str(self.end_ns),
                "status": {"code": self.status_code, "message": self.status_message},
                "attributes": self.attributes, "scope": self.scope}


def _value(v: AnyValue, depth: int = 0) -> Any:
    """One protobuf attribute value, made holdable as :func:`holdable` says (inline here:
    this runs for every attribute of every span). Protobuf has checked strings are UTF-8."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        number = v.int_value
        return number if -MAX_SAFE_INT <= number <= MAX_SAFE_INT else str(number)
    if kind == "double_value":
        real = v.double_value
        return real if math.isfinite(real) else _NON_FINITE.get(real, "NaN")
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value" or kind == "kvlist_value":
        if depth >= MAX_DEPTH:
            raise BadValue(f"nested deeper than {MAX_DEPTH} levels")
        if kind == "array_value":
            return [_value(x, depth + 1) for x in v.array_value.values]
        return {kv.key: _value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def _hex(raw: bytes) -> str:
    return raw.hex()


def _exception_type(events: Any) -> str | None:
    """The recorded exception's type (the last ``exception`` event's ``exception.type``)."""
    found = None
    for ev in events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type":
                    try:
                        value = _value(kv.value)
                    except BadValue:
                        continue
                    found = str(value) if value else found
    return found


def spans_of(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    """Every span of ``request``, flattened with its resource and scope, checked.

    A span whose attributes cannot be held (:class:`BadValue`) is returned with its
    ``problem`` set, so it is refused alone and counted; it never raises out.
    """
    out: list[SpanRecord] = []
    for rs in request.resource_spans:
        resource_problem = None
        try:
            resource = _attrs(rs.resource.attributes)
        except BadValue as exc:
            resource, resource_problem = {}, f"invalid_attribute: resource: {exc}"
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                problem = resource_problem
                try:
                    attributes = _attrs(s.attributes)
                except BadValue as exc:
                    attributes, problem = {}, problem or f"invalid_attribute: {exc}"
                record = SpanRecord(
                    trace_id=_hex(s.trace_id), span_id=_hex(s.span_id),
                    parent_span_id=_hex(s.parent_span_id) or None, name=s.name,
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    status_code=s.status.code, status_message=s.status.message,
                    attributes=attributes, resource=resource, scope=scope,
                    exception_type=_exception_type(s.events))
                record.problem = check(record) or problem
                out.append(record)
    return out


def check(span: SpanRecord) -> str | None:
    """Why the span cannot be a ledger event, or None."""
    if len(span.trace_id) != 32 or span.trace_id == "0" * 32:
        return "invalid_trace_id: traceId must be 16 bytes (32 hex digits), not all zero"
    if len(span.span_id) != 16 or span.span_id == "0" * 16:
        return "invalid_span_id: spanId must be 8 bytes (16 hex digits), not all zero"
    if span.parent_span_id is not None and len(span.parent_span_id) != 16:
        return "invalid_parent_span_id: parentSpanId must be empty or 8 bytes (16 hex digits)"
    if not _NS_MIN <= span.start_ns < _NS_MAX:
        return "invalid_time: startTimeUnixNano is outside 2000..2100"
    if span.end_ns < span.start_ns or span.end_ns >= _NS_MAX:
        return "invalid_time: endTimeUnixNano is before startTimeUnixNano or after 2100"
    return None


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"not an OTLP ExportTraceServiceRequest (protobuf): {exc}") from None
    return request


_STATUS_NAMES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_HEX = frozenset("0123456789abcdef")


def _get(obj: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    value = obj.get(camel)
    return obj.get(snake, default) if value is None else value


def _json_id(value: Any, size: int) -> str:
    """A hex id, lowercased; a malformed one becomes a wrong-length marker so the span (not
    the request) is refused by :func:`check`."""
    if value is None or value == "":
        return ""
    text = str(value).lower()
    return text if len(text) == size * 2 and _HEX.issuperset(text) else "?"


def _json_value(v: Any, depth: int = 0) -> Any:
    """One OTLP/JSON ``AnyValue``, holdable (:func:`holdable`); a wrong type raises
    :class:`BadValue`, which refuses the span (not the request)."""
    if not isinstance(v, dict):
        raise BadValue(f"an attribute value must be an object, not {type(v).__name__}")
    if "stringValue" in v:
        text = v["stringValue"]
        if not isinstance(text, str):
            raise BadValue(f"stringValue {text!r:.100} is not a string")
        return text if text.isascii() else _text(text)
    if "intValue" in v:
        raw = v["intValue"]  # a string in OTLP/JSON (64-bit), a number from some writers
        if type(raw) is not int and (not isinstance(raw, str) or not raw.lstrip("-").isdigit()
                                     or len(raw) > 20):
            raise BadValue(f"intValue {raw!r:.100} is not a 64-bit integer")
        number = int(raw)
        return number if -MAX_SAFE_INT <= number <= MAX_SAFE_INT else str(number)
    if "doubleValue" in v:
        raw = v["doubleValue"]
        try:  # "NaN", "Infinity", "-Infinity" are proto3 JSON's spellings
            real = float(raw) if type(raw) is not bool else None
        except (TypeError, ValueError, OverflowError):
            real = None
        if real is None:
            raise BadValue(f"doubleValue {raw!r:.100} is not a number")
        return real if math.isfinite(real) else _NON_FINITE.get(real, "NaN")
    if "boolValue" in v:
        if not isinstance(v["boolValue"], bool):
            raise BadValue(f"boolValue {v['boolValue']!r:.100} is not true or false")
        return v["boolValue"]
    if "arrayValue" in v or "kvlistValue" in v:
        if depth >= MAX_DEPTH:
            raise BadValue(f"nested deeper than {MAX_DEPTH} levels")
        if "arrayValue" in v:
            values = (v["arrayValue"] or {}).get("values") or []
            if not isinstance(values, list):
                raise BadValue("arrayValue.values is not a list")
            return [_json_value(x, depth + 1) for x in values]
        return _json_attrs((v["kvlistValue"] or {}).get("values"), depth + 1)
    if "bytesValue" in v:
        try:
            return base64.b64decode(v["bytesValue"], validate=True).hex()
        except (binascii.Error, TypeError, ValueError):
            raise BadValue(f"bytesValue {v['bytesValue']!r:.100} is not base64") from None
    return None


def _json_attrs(items: Any, depth: int = 0) -> dict[str, Any]:
    """A list of ``{key, value}``; a span's own list that is not one raises TypeError (the
    request is malformed), a nested one raises :class:`BadValue` (the span is refused)."""
    if not isinstance(items, list | None):
        if depth == 0:
            raise TypeError(f"attributes must be a list, not {type(items).__name__}")
        raise BadValue("a kvlistValue's values are not a list of {key, value}")
    out = {}
    for kv in items or []:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise BadValue(f"attribute {kv!r:.100} has no string key")
        key = kv["key"]
        out[key if key.isascii() else _text(key)] = _json_value(kv.get("value") or {}, depth)
    return out


def _json_span(s: dict[str, Any], resource: dict[str, Any], scope: str,
               resource_problem: str | None = None) -> SpanRecord:
    """One span. A span that is not shaped like one (a field of the wrong type) raises, and
    :func:`decode_json` refuses the request whole; an attribute *value* the ledger cannot
    hold (:class:`BadValue`) refuses this span alone."""
    status = s.get("status") or {}
    code = status.get("code", 0)
    exception_type = None
    for ev in s.get("events") or []:
        if ev.get("name") == "exception":
            try:
                found = _json_attrs(ev.get("attributes")).get("exception.type")
            except BadValue:
                continue
            exception_type = str(found) if found else exception_type
    problem = resource_problem
    try:
        attributes = _json_attrs(s.get("attributes"))
    except BadValue as exc:
        attributes, problem = {}, problem or f"invalid_attribute: {exc}"
    record = SpanRecord(
        trace_id=_json_id(_get(s, "traceId", "trace_id"), 16),
        span_id=_json_id(_get(s, "spanId", "span_id"), 8),
        parent_span_id=_json_id(_get(s, "parentSpanId", "parent_span_id"), 8) or None,
        name=_text(str(s.get("name") or "")),
        start_ns=int(_get(s, "startTimeUnixNano", "start_time_unix_nano", 0)),
        end_ns=int(_get(s, "endTimeUnixNano", "end_time_unix_nano", 0)),
        status_code=_STATUS_NAMES[code] if isinstance(code, str) else int(code),
        status_message=_text(str(status.get("message") or "")),
        attributes=attributes, resource=resource, scope=scope,
        exception_type=exception_type)
    record.problem = check(record) or problem
    return record


def decode_json(body: bytes) -> list[SpanRecord]:
    """OTLP/JSON (hex ids, camelCase or proto field names) straight to spans.

    Read directly rather than through protobuf's JSON parser, which is ten times slower
    and would need the ids rewritten from hex to base64 first.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadError("OTLP/JSON: expected an object with 'resourceSpans'")
    out: list[SpanRecord] = []
    try:
        for rs in _get(document, "resourceSpans", "resource_spans") or []:
            resource_problem = None
            try:
                resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
            except BadValue as exc:
                resource, resource_problem = {}, f"invalid_attribute: resource: {exc}"
            for ss in _get(rs, "scopeSpans", "scope_spans") or []:
                scope = _text(str((ss.get("scope") or {}).get("name") or ""))
                out += [_json_span(s, resource, scope, resource_problem)
                        for s in ss.get("spans") or []]
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError,
            binascii.Error) as exc:
        raise PayloadError(f"not an OTLP ExportTraceServiceRequest (JSON): "
                           f"{type(exc).__name__}: {str(exc)[:300]}") from None
    return out


def decode_protobuf(body: bytes) -> list[SpanRecord]:
    return spans_of(parse_protobuf(body))


def decode(body: bytes, encoding: str) -> list[SpanRecord]:
    """``encoding``: ``otlp_proto``, ``otlp_json`` or ``auto`` (JSON if it starts with '{')."""
    if encoding == "auto":
        encoding = "otlp_json" if body.lstrip()[:1] == b"{" else "otlp_proto"
    if encoding == "otlp_json":
        return decode_json(body)
    if encoding == "otlp_proto":
        return decode_protobuf(body)
    raise ValueError(f"unknown encoding {encoding!r} (otlp_proto, otlp_json, auto)")
