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
OWN_SCOPE: Final = "agentledger"
"""Spans of the project's own SDK: their runs are in the ledger already (skipped)."""


class PayloadError(ValueError):
    """The payload is not an OTLP trace request in the stated encoding."""


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


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def _hex(raw: bytes) -> str:
    return raw.hex()


def spans_of(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    """Every span of ``request``, flattened with its resource and scope, checked."""
    out: list[SpanRecord] = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                exception_type = None
                for ev in s.events:
                    if ev.name == "exception":
                        found = _attrs(ev.attributes).get("exception.type")
                        exception_type = str(found) if found else exception_type
                record = SpanRecord(
                    trace_id=_hex(s.trace_id), span_id=_hex(s.span_id),
                    parent_span_id=_hex(s.parent_span_id) or None, name=s.name,
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    status_code=s.status.code, status_message=s.status.message,
                    attributes=_attrs(s.attributes), resource=resource, scope=scope,
                    exception_type=exception_type)
                record.problem = check(record)
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


def _json_value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_json_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return _json_attrs((v["kvlistValue"] or {}).get("values"))
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"]).hex()
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value") or {}) for kv in items or []}


def _json_span(s: dict[str, Any], resource: dict[str, Any], scope: str) -> SpanRecord:
    status = s.get("status") or {}
    code = status.get("code", 0)
    exception_type = None
    for ev in s.get("events") or []:
        if ev.get("name") == "exception":
            found = _json_attrs(ev.get("attributes")).get("exception.type")
            exception_type = str(found) if found else exception_type
    record = SpanRecord(
        trace_id=_json_id(_get(s, "traceId", "trace_id"), 16),
        span_id=_json_id(_get(s, "spanId", "span_id"), 8),
        parent_span_id=_json_id(_get(s, "parentSpanId", "parent_span_id"), 8) or None,
        name=str(s.get("name") or ""),
        start_ns=int(_get(s, "startTimeUnixNano", "start_time_unix_nano", 0)),
        end_ns=int(_get(s, "endTimeUnixNano", "end_time_unix_nano", 0)),
        status_code=_STATUS_NAMES[code] if isinstance(code, str) else int(code),
        status_message=str(status.get("message") or ""),
        attributes=_json_attrs(s.get("attributes")), resource=resource, scope=scope,
        exception_type=exception_type)
    record.problem = check(record)
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
            resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
            for ss in _get(rs, "scopeSpans", "scope_spans") or []:
                scope = str((ss.get("scope") or {}).get("name") or "")
                out += [_json_span(s, resource, scope) for s in ss.get("spans") or []]
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
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
