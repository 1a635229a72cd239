"""OTLP/HTTP trace intake: ``POST /v1/traces`` (protobuf or JSON, optionally gzip).

Answers follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` in
the request's encoding, carrying ``partial_success`` (count and reasons) when some spans
were refused; 400 for a body that is not an OTLP trace request, 413 for a body over the
limit, 415 for another content type or encoding; error bodies are a ``google.rpc.Status``
in the request's encoding (JSON errors also carry the project's usual ``detail``).

The tenant comes from the API key, never from span attributes: a key of one tenant
writes that tenant; a key of several tenants (or an operator key) must name one in
``X-AgentLedger-Tenant``, and naming a tenant outside the key's scope is a 403.

The routes are served by ``agentledger intake`` (:func:`create_intake_app`, port 4318)
and by the ledger API. Spans are grouped into runs in the serving process
(:class:`agentledger.intake.runs.Assembler`) and a closer thread publishes each run once
complete. A refused request changes nothing; in an accepted one, refused spans go to the
DLQ (acknowledged before the answer; the sink lands them in ``rejected_events``) and the
rest land. Behind a load balancer, keep one trace on one process (or use the Kafka intake).

No span stops the intake: values the canonical form cannot hold are made holdable or
refused when decoded (:func:`agentledger.intake.spans.holdable`), so the answer's
``partial_success`` counts them; a run that still fails to build when closed has its spans
dead-lettered (``run_unbuildable``) and the closer goes on to the next run; a closing
round that raises is logged and counted, and the loop goes on. The closer's beat is in
``health`` (:class:`agentledger.intake.publisher.CloserBeat`). Tool arguments and run errors
are redacted with ``Settings.redact_keys`` (``AGENTLEDGER_REDACT_KEYS``), as the SDK does.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import zlib
from collections import Counter
from typing import Annotated, Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from agentledger.api.deps import bootstrap_of, principal
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import Principal
from agentledger.core.redaction import Redactor
from agentledger.core.settings import Settings
from agentledger.intake.catalogue import CatalogueError, load_catalogue
from agentledger.intake.publisher import CloserBeat, Publisher, PublishFailed
from agentledger.intake.runs import Assembler, Intake, Rejected
from agentledger.intake.spans import PayloadError, decode_json, decode_protobuf

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest accepted body, compressed or not (Phoenix-sized batches fit)."""
MAX_OPEN_SPANS = 200_000
"""Spans waiting for their runs to close before new batches get 503 (retryable)."""
TENANT_HEADER = "X-AgentLedger-Tenant"
GRACE_ENV = "AGENTLEDGER_OTLP_GRACE_S"
"""Seconds after a trace's root span before its run is closed (default 2)."""
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$")
PROTOBUF, JSON = "application/x-protobuf", "application/json"
HTTP_TOPIC = "otlp.http"
"""``rejected_events.topic`` (and the DLQ's original-topic header) of a span refused here."""
router = APIRouter(tags=["otlp"])


class OtlpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpIntake:
    """The assembler, the publisher and the closer thread of one API process."""

    beat: CloserBeat | None = None
    """The closer's liveness file (None when built without its thread)."""

    def __init__(self, settings: Settings, bootstrap: str, *, grace_s: float = 2.0,
                 idle_s: float = 30.0, role: str = "api"):
        try:
            catalogue = load_catalogue(settings.policy_file)
        except CatalogueError as exc:  # every tool then counts as a write: the safe side
            log.error("tool catalogue not loaded", extra={"error": str(exc)})
            catalogue = None
        self.assembler = Assembler(origin="otlp_http", grace_s=grace_s, idle_s=idle_s,
                                   catalogue=catalogue,
                                   redactor=Redactor(settings.redact_keys))
        self.publisher = Publisher(bootstrap, security=settings.kafka_security)
        self.beat = CloserBeat(settings, role, self.assembler)
        self._pending: list[dict[str, Any]] = []
        """Events of closed runs Kafka has not acknowledged yet (retried; ids dedup)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="otlp-closer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Close due runs every 50 ms until stopped; nothing raised in a round ends it."""
        beat = self.beat
        assert beat is not None
        beat.beat(force=True)
        while not self._stop.wait(0.05):
            try:
                self.close_due()
            except Exception as exc:  # counted and reported in health; the next round runs
                beat.errors += 1
                beat.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
                log.exception("OTLP closing round failed", extra={"error": str(exc)})
            beat.beat()

    def close_due(self, force: bool = False) -> int:
        events = list(self._pending)
        runs = self.assembler.iter_due(force=force)
        refused = 0
        try:
            if events:
                self.publisher.publish(events)
            for run in runs:  # each run goes out as soon as it is built
                events += run.events
                self.publisher.publish(run.events)
                if run.rejected:  # its build failed: its spans go to the DLQ, with why
                    refused += len(run.rejected)
                    self.publisher.reject(run.rejected, topic=HTTP_TOPIC)
            if self.beat is not None:
                self.beat.spans_refused += refused
                self.beat.closed(len(events))
            if not events and not refused:
                return 0
            self.publisher.flush(30)
        except (PublishFailed, KafkaException) as exc:
            for run in runs:  # the closed runs not built yet must not be lost
                events += run.events
                if run.rejected:
                    self.publisher.reject(run.rejected, topic=HTTP_TOPIC)
            self._pending = events  # sent again next round; the sink dedups by event_id
            log.error("OTLP events not published yet", extra={"events": len(events),
                                                               "error": str(exc)})
            return 0
        self._pending = []
        return len(events)

    @property
    def backlog(self) -> int:
        """Spans of open runs plus events waiting for Kafka: what back-pressure bounds."""
        return self.assembler.open_spans + len(self._pending)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.close_due(force=True)
        if self.beat is not None:
            self.beat.withdraw()


def install(app: FastAPI) -> None:
    """Mount the OTLP and control-stream routes on the ledger API."""
    from agentledger import control_stream

    app.state.otlp_lock = threading.Lock()
    # The routes themselves, not include_router: this FastAPI lists an included router as
    # one opaque entry of app.routes, and route listings (isolation tests) need each path.
    app.router.routes.extend([*router.routes, *control_stream.router.routes])

    def _stop() -> None:
        _stop_intake(app)
        control_stream.stop(app)

    app.router.on_shutdown.append(_stop)


def create_intake_app(settings: Settings) -> FastAPI:
    """``POST /v1/traces`` alone, for the ``agentledger intake`` process.

    The same routes as the ledger API's, in a process of their own: decoding, run
    assembly and publishing then do not share the store process's interpreter lock with
    the sink (on two cores that is what bounds the API's intake). Keys are the configured
    ones and this machine's operator key, read again when they change.
    """
    from agentledger.api.errors import install_error_handlers
    from agentledger.auth import ReloadingKeyRing

    app = FastAPI(title="agentledger OTLP intake", default_response_class=OrjsonResponse)
    app.state.keys = ReloadingKeyRing(settings)
    app.state.otlp_settings = settings
    app.state.otlp_role = "intake-http"
    app.state.otlp_lock = threading.Lock()
    install_error_handlers(app)
    app.router.routes.extend(router.routes)
    app.router.on_shutdown.append(lambda: _stop_intake(app))
    return app


def _stop_intake(app: FastAPI) -> None:
    """Close every run still open and publish it: a stop loses no accepted span."""
    intake = getattr(app.state, "otlp", None)
    if intake is not None:
        intake.stop()


def intake_of(app: FastAPI) -> HttpIntake:
    with app.state.otlp_lock:
        intake = getattr(app.state, "otlp", None)
        if intake is None:
            settings, bootstrap = bootstrap_of(app)
            grace = getattr(app.state, "otlp_grace_s", None)
            intake = app.state.otlp = HttpIntake(
                settings, bootstrap, grace_s=float(os.environ.get(GRACE_ENV, 2.0))
                if grace is None else grace, role=getattr(app.state, "otlp_role", "api"))
        return intake


def tenant_for(who: Principal, requested: str | None) -> str:
    """The tenant the spans are written for: the key's, never the spans'."""
    if requested is not None:
        if not _TENANT.match(requested):
            raise HTTPException(400, f"{TENANT_HEADER}: not a tenant name")
        if not who.allowed(requested):
            raise HTTPException(403, f"key {who.name!r} may not write tenant {requested!r}")
        return requested
    if who.tenants is None or len(who.tenants) != 1:
        raise HTTPException(403, f"key {who.name!r} covers several tenants: name one in "
                                 f"{TENANT_HEADER}")
    return next(iter(who.tenants))


def _media(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        raise OtlpError(415, f"content type {media or '(none)'!r} is not supported: send "
                             f"{PROTOBUF} or {JSON}")
    return media


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OtlpError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OtlpError(413, f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise OtlpError(415, f"content encoding {encoding!r} is not supported (gzip, identity)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise OtlpError(400, f"body is not valid gzip: {exc}") from None
    if inflater.unconsumed_tail:
        raise OtlpError(413, f"decompressed body exceeds the {limit}-byte limit")
    if not inflater.eof:
        raise OtlpError(400, "body is not valid gzip: truncated")
    return plain


def _error(status: int, message: str, media: str) -> Response:
    code = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 503: 14}.get(status, 2)
    if media == PROTOBUF:
        return Response(Status(code=code, message=message).SerializeToString(), status,
                        media_type=PROTOBUF)
    return OrjsonResponse({"code": code, "message": message, "detail": message}, status)


def _summary(rejected: list[Rejected]) -> str:
    counts = Counter(r.reason for r in rejected)
    first = {r.reason: r.message for r in reversed(rejected)}
    return "; ".join(f"{reason} ({n}): {first[reason]}" for reason, n in counts.items())[:4096]


def _ingest(app: FastAPI, body: bytes, media: str, tenant: str) -> Intake:
    try:
        spans = decode_protobuf(body) if media == PROTOBUF else decode_json(body)
    except PayloadError:
        raise
    except Exception as exc:  # an unforeseen decoder failure is this request's, answered 400
        log.exception("OTLP request not decodable", extra={"error": str(exc)})
        raise PayloadError(f"OTLP request not decodable: {type(exc).__name__}: "
                           f"{str(exc)[:300]}") from None
    intake = intake_of(app)
    if intake.backlog >= getattr(app.state, "otlp_max_open_spans", MAX_OPEN_SPANS):
        raise OtlpError(503, f"the intake holds {intake.backlog} spans and events not yet "
                             "published; retry later")
    result = intake.assembler.add(spans, tenant)
    if result.rejected:
        # the DLQ acknowledged before the answer; the sink lands it in rejected_events
        intake.publisher.reject(result.rejected, topic=HTTP_TOPIC)
        intake.publisher.dead_letters.flush(30)
    return result


@router.post("/v1/traces", summary="OTLP/HTTP trace intake (protobuf or JSON, gzip)",
             responses={200: {"content": {PROTOBUF: {}, JSON: {}}}})
async def export_traces(request: Request, who: Annotated[Principal, Depends(principal)]
                        ) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        media = _media(request)
        tenant = tenant_for(who, request.headers.get(TENANT_HEADER))
        body = await _body(request, getattr(request.app.state, "otlp_max_body", MAX_BODY_BYTES))
        result = await run_in_threadpool(_ingest, request.app, body, media, tenant)
    except OtlpError as exc:
        response = _error(exc.status, exc.message, media)
        if exc.status == 503:
            response.headers["Retry-After"] = "2"
        return response
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail), media)
    except PayloadError as exc:
        return _error(400, str(exc), media)
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = len(result.rejected)
        response.partial_success.error_message = _summary(result.rejected)
    if media == PROTOBUF:
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    return Response(json_format.MessageToJson(response, indent=None), media_type=JSON)

