"""OpenTelemetry for the SDK: event trace/span ids ARE the OTel ids.

If the host application already installed an SDK TracerProvider, spans go to it. If not,
one is installed: it always generates real ids, and exports over OTLP only when the
standard ``OTEL_*`` variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_TRACES_EXPORTER=otlp``), so an unconfigured agent pays no network cost.
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace

_lock = threading.Lock()


def _wants_export() -> bool:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return exporter == "otlp" or (bool(endpoint) and exporter != "none")


def get_tracer() -> trace.Tracer:
    # The SDK's provider is imported here, when a Ledger first needs a tracer, not when the
    # package is imported: an agent that only imports agentledger pays nothing for it.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    with _lock:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            provider = TracerProvider(
                resource=Resource.create({"service.name": os.environ.get(
                    "OTEL_SERVICE_NAME", "agentledger-agent")})
            )
            if _wants_export():
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
    return trace.get_tracer("agentledger")


def traceparent(span_context: trace.SpanContext) -> str:
    """W3C trace context header value for a span."""
    flags = int(span_context.trace_flags) & 0xFF
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"
