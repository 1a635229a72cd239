"""Span builders for the OTLP tests: real OpenTelemetry SDK spans, and a one-row helper."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentledger.intake.catalogue import ToolCatalogue
from agentledger.intake.mapping import map_span
from agentledger.intake.runs import Assembler
from agentledger.intake.spans import SpanRecord
from agentledger.schemas.events import parse_event

T0 = 1_790_000_000 * 10**9  # 2026-09-21, inside the envelope's range


def record(attrs: dict[str, Any], *, name: str = "span", parent: str | None = "1" * 16,
           status: int = 0, span_id: str = "2" * 16, start: int = T0,
           duration_ms: float = 100.0, resource: dict[str, Any] | None = None) -> SpanRecord:
    return SpanRecord(trace_id="a" * 32, span_id=span_id, parent_span_id=parent, name=name,
                      start_ns=start, end_ns=start + int(duration_ms * 1e6), status_code=status,
                      status_message="", attributes=attrs,
                      resource=resource or {"service.name": "support-bot"}, scope="test")


def agent_run(exporter: SpanExporter, *, tool: str = "crm", service: str = "support-bot",
              tool_errors: int = 1) -> str:
    """agent → chat → execute_tool (error) → chat in GenAI semconv; returns the trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": service,
                                                        "service.version": "2.0.0"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("my.agent")
    with tracer.start_as_current_span("invoke_agent triage", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}) as root:
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300}):
            pass
        for _ in range(tool_errors):
            with tracer.start_as_current_span(f"execute_tool {tool}", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.id": "call_1", "error.type": "ConnectionError",
                    "gen_ai.tool.call.arguments": '{"ticket": "T-9", "api_key": "sk-x"}'}) as s:
                s.set_status(Status(StatusCode.ERROR, "crm unreachable"))
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 800,
                "gen_ai.usage.completion_tokens": 100}):
            pass
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()
    return trace_id


def run_spans(**kwargs: Any) -> tuple[str, list[ReadableSpan]]:
    memory = InMemorySpanExporter()
    trace_id = agent_run(memory, **kwargs)
    return trace_id, list(memory.get_finished_spans())


def request_bytes(spans: list[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest, as the OTLP exporters and the Collector write it."""
    return encode_spans(spans).SerializeToString()


def request_json(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON (hex ids, camelCase), as the Collector's otlp_json encoding writes it."""
    import orjson
    from google.protobuf import json_format

    document = json_format.MessageToDict(encode_spans(spans))
    for rs in document["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        import base64

                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def shape(events: list[dict[str, Any]]) -> list[tuple]:
    """What must be equal across intakes and conventions: types and key body fields."""
    keep = ("provider", "model", "tokens_in", "tokens_out", "cost_usd", "tool", "status",
            "mode", "outcome", "error_type")
    return [(e["event_type"], e["seq"], tuple((k, e["body"].get(k)) for k in keep
                                              if k in e["body"])) for e in events]


# -- the mapping tests' shorthands ---------------------------------------------------------

NONE = ToolCatalogue()


def body(attrs: dict[str, Any], **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(t, b) for t, _, b in map_span(record(attrs, **kw), "acme", NONE).events]


def run_of(spans: list[SpanRecord], tenant: str = "acme") -> list[dict[str, Any]]:
    assembler = Assembler(origin="otlp_http", grace_s=0)
    result = assembler.add(spans, tenant)
    assert not result.rejected, result.rejected
    (run,) = assembler.due()
    for event in run.events:
        parse_event(event)
    return run.events


ROOT_SPAN = "1" * 16


def agent(attrs: dict[str, Any], **kw: Any) -> SpanRecord:
    return record(attrs, name="agent", parent=None, span_id=ROOT_SPAN, duration_ms=1000, **kw)
