"""OTLP/HTTP trace intake routes: ``POST /v1/traces`` (protobuf or JSON, optionally gzip).

Answers follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` in
the request's encoding, carrying ``partial_success`` (count and reasons) when some spans
were refused; 400 for a body that is not an OTLP trace request, 413 for a body over the
limit, 415 for another content type or encoding, 503 (retryable) while the intake is full;
error bodies are a ``google.rpc.Status`` in the request's encoding (JSON errors also carry
the project's usual ``detail``).

The tenant comes from the API key, never from span attributes: a key of one tenant
writes that tenant; a key of several tenants (or an operator key) must name one in
``X-AgentLedger-Tenant``, and naming a tenant outside the key's scope is a 403.

The routes are served by ``agentledger intake`` (:func:`create_intake_app`, port 4318)
and by the ledger API; what happens to the spans, and why no span can stop it, is
:mod:`agentledger.intake.http_intake`.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from collections import Counter
from typing import Annotated

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
from agentledger.core.settings import Settings
from agentledger.intake.http_intake import (
    JSON,
    MAX_OPEN_SPANS,
    PROTOBUF,
    HttpIntake,
    IntakeFull,
    ingest,
)
from agentledger.intake.runs import Intake, Rejected
from agentledger.intake.spans import PayloadError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest accepted body, compressed or not (Phoenix-sized batches fit)."""
TENANT_HEADER = "X-AgentLedger-Tenant"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$")
router = APIRouter(tags=["otlp"])


class OtlpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def install(app: FastAPI) -> None:
    """Mount ``POST /v1/traces`` on ``app``; its closer publishes every open run on shutdown."""
    app.state.otlp_lock = threading.Lock()
    # The routes themselves, not include_router: this FastAPI lists an included router as
    # one opaque entry of app.routes, and route listings (isolation tests) need each path.
    app.router.routes.extend(router.routes)
    app.router.on_shutdown.append(lambda: _stop_intake(app))


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
            intake = app.state.otlp = HttpIntake(
                settings, bootstrap, grace_s=getattr(app.state, "otlp_grace_s", None),
                role=getattr(app.state, "otlp_role", "api"))
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


def bound_agents(who: Principal, tenant: str) -> frozenset[str] | None:
    """The agents ``who`` may record as in ``tenant`` (``agents: [a]`` or ``[tenant/a]`` in
    its key entry); None for a key bound to no agent, which records as any."""
    if not who.agents:
        return None
    return frozenset(a.split("/", 1)[1] if "/" in a else a for a in who.agents
                     if "/" not in a or a.startswith(f"{tenant}/"))


def _ingest(app: FastAPI, body: bytes, media: str, tenant: str,
            agents: frozenset[str] | None) -> Intake:
    try:
        return ingest(intake_of(app), body, media, tenant, max_open_spans=getattr(
            app.state, "otlp_max_open_spans", MAX_OPEN_SPANS), agents=agents)
    except IntakeFull as exc:
        raise OtlpError(503, str(exc)) from None


@router.post("/v1/traces", summary="OTLP/HTTP trace intake (protobuf or JSON, gzip)",
             responses={200: {"content": {PROTOBUF: {}, JSON: {}}}})
async def export_traces(request: Request, who: Annotated[Principal, Depends(principal)]
                        ) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        media = _media(request)
        tenant = tenant_for(who, request.headers.get(TENANT_HEADER))
        body = await _body(request, getattr(request.app.state, "otlp_max_body", MAX_BODY_BYTES))
        result = await run_in_threadpool(_ingest, request.app, body, media, tenant,
                                         bound_agents(who, tenant))
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

