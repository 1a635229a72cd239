"""The ledger HTTP API over ClickHouse.

In embedded mode this API lives in the process that owns the chdb store (beside the
sink), and it is how every other process reads the store. It serves its OpenAPI
document at ``/openapi.json`` and interactive docs at ``/docs``.

Every ``/v1`` route needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key``);
a key reads only its tenants' rows. No key or an unknown key → 401; a tenant outside the
key's scope → 403; another tenant's run id looks like a missing one (404), so keys cannot
probe which ids exist. Bad input is a 4xx naming the parameter, never a 500.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from agentledger import __version__, approvals_api
from agentledger.auth import KeyRing, Principal
from agentledger.control_api import control_router
from agentledger.queries import economics, events, export, operations, replay, timeline
from agentledger.queries.common import Forbidden, NotFound, QueryError, Scope, parse_time
from agentledger.queries.pipeline import HealthLimits
from agentledger.query import QueryRefused, run_read_only
from agentledger.watch_api import watch_router
from schemas.events import EVENT_TYPES

log = logging.getLogger(__name__)

# Path and filter values look like the ledger's own names; anything else is a 422 before
# it reaches a query (it would match nothing anyway: every value is a bound parameter).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$"
NameFilter = Annotated[str | None, Query(min_length=1, max_length=128)]
TimeParam = Annotated[str | None, Query(
    max_length=64, description="7d, 24h, 30m (ago), now, or an ISO date/datetime (UTC)")]
RunRef = Annotated[str, Path(pattern=ID_PATTERN, description="a run id or a trace id")]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Status = Literal["ok", "error", "timeout", "rejected"]
Outcome = Literal["success", "failure", "aborted", "rolled_back"]
ControlKind = Literal["breaker", "safe_mode", "budget", "override"]


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(value).__name__}")


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


class SqlRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only statement")
    parameters: dict[str, Any] | None = Field(
        default=None, description="bound as {name:Type} placeholders, never spliced")
    max_rows: int = Field(default=10_000, ge=1, le=1_000_000)


class SqlResponse(BaseModel):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class RevenueRequest(BaseModel):
    tenant: str = Field(pattern=ID_PATTERN)
    workflow: str = Field(pattern=ID_PATTERN)
    revenue_per_success_usd: float = Field(ge=0, le=1_000_000)
    valid_from: dt.date
    note: str = Field(default="", max_length=1000)


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def principal(request: Request,
              bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
              header: Annotated[str | None, Depends(_header)]) -> Principal:
    """The caller, from its key; 401 without a known one."""
    presented = header or (bearer.credentials if bearer else None)
    if not presented:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or "
                                 "'X-API-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})
    found = request.app.state.keys.authenticate(presented)
    if found is None:
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


def caller_scope(who: Annotated[Principal, Depends(principal)]) -> Scope:
    return Scope(who.tenants)


def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.operator:
        raise HTTPException(403, "this needs an operator key (tenants: ['*'])")
    return who


Caller = Annotated[Scope, Depends(caller_scope)]
Operator = Annotated[Principal, Depends(operator)]


def _time(value: str | None, name: str) -> dt.datetime | None:
    try:
        return parse_time(value)
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None


def create_app(client: Client, keys: KeyRing, *, database: str = "agentledger",
               retention_days: dict[str, int] | None = None,
               stats: Callable[[], dict[str, Any]] | None = None,
               max_rows: int = 10_000, query_seconds: float = 30.0,
               health_limits: HealthLimits | None = None) -> FastAPI:
    """The API over ``client``; ``keys`` decides who reads what."""
    app = FastAPI(title="agentledger", version=__version__, default_response_class=OrjsonResponse,
                  description=__doc__)
    app.state.keys = keys

    @app.exception_handler(QueryError)
    def _bad_request(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Forbidden)
    def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(NotFound)
    def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                    for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(ClickHouseError)
    def _store_error(_: Request, exc: ClickHouseError) -> JSONResponse:
        log.error("query failed", extra={"error": _first_line(str(exc))})
        return JSONResponse({"detail": f"store error: {_first_line(str(exc))}"}, status_code=503)

    @app.get("/healthz", summary="liveness of the API and its store (no key needed)")
    def healthz() -> dict[str, Any]:
        try:
            client.command("SELECT 1")
        except ClickHouseError as exc:
            raise HTTPException(503, f"store unavailable: {_first_line(str(exc))}") from None
        return {"status": "ok", "version": __version__}

    @app.get("/v1/events", summary="search events: filters, time range, cursor pagination")
    def search_events(
        caller: Caller,
        tenant: NameFilter = None, agent: NameFilter = None, tool: NameFilter = None,
        event_type: EventType | None = None, status: Status | None = None,
        outcome: Outcome | None = None,
        trace_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
        run_id: NameFilter = None, workflow: NameFilter = None,
        q: Annotated[str | None, Query(max_length=256, description="text in errors")] = None,
        since: TimeParam = None, until: TimeParam = None,
        limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        order: Literal["asc", "desc"] = "desc",
        include_body: bool = False,
    ) -> Any:
        filters = events.SearchFilters(
            tenant=tenant, agent=agent, tool=tool, event_type=event_type, status=status,
            outcome=outcome, trace_id=trace_id, run_id=run_id, workflow=workflow, text=q,
            since=_time(since, "since"), until=_time(until, "until"))
        return events.search(client, caller, filters, limit=limit, cursor=cursor, order=order,
                             include_body=include_body)

    @app.get("/v1/timeline/{ref}", summary="run timeline by run id or trace id")
    def run_timeline(caller: Caller, ref: RunRef) -> Any:
        return timeline.timeline(client, caller, ref)

    @app.get("/v1/replay/{ref}", summary="replay bundle of a run or every run of a trace")
    def replay_bundle(caller: Caller, ref: RunRef) -> Any:
        return replay.replay_bundle(client, caller, ref)

    @app.get("/v1/verify/{ref}", summary="hash-chain and column verification of stored runs")
    def verify(caller: Caller, ref: RunRef) -> Any:
        return replay.verify(client, caller, ref)

    @app.get("/v1/tools/health", summary="per-tool calls, error rate, latency quantiles")
    def tools_health(
        caller: Caller, tenant: NameFilter = None, agent: NameFilter = None,
        tool: NameFilter = None, since: TimeParam = "24h", until: TimeParam = None,
        bucket_minutes: Annotated[int | None, Query(ge=1, le=10_080)] = None,
    ) -> Any:
        return operations.tool_health(client, caller, _time(since, "since"),
                                      _time(until, "until"), tenant=tenant, agent=agent,
                                      tool=tool, bucket_minutes=bucket_minutes)

    @app.get("/v1/control/history", summary="breaker, safe-mode, budget, override transitions")
    def control_history(
        caller: Caller, tenant: NameFilter = None, kind: ControlKind | None = None,
        since: TimeParam = None, until: TimeParam = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> Any:
        return operations.control_history(client, caller, _time(since, "since"),
                                          _time(until, "until"), tenant=tenant, kind=kind,
                                          limit=limit)

    @app.get("/v1/control/state", summary="current state of every controlled scope")
    def control_state(caller: Caller, tenant: NameFilter = None,
                      active_only: bool = False) -> Any:
        return operations.control_state(client, caller, tenant=tenant, active_only=active_only)

    @app.get("/v1/margins", summary="unit economics and gross margin per group")
    def margins(
        caller: Caller,
        by: Literal["workflow", "tenant", "agent", "model", "day"] = "workflow",
        since: TimeParam = "30d", until: TimeParam = None, tenant: NameFilter = None,
        workflow: NameFilter = None,
    ) -> Any:
        return economics.margins(client, caller, by, _time(since, "since"),
                                 _time(until, "until"), tenant=tenant, workflow=workflow)

    @app.get("/v1/revenue", summary="revenue per successful task, per tenant and workflow")
    def revenue(caller: Caller) -> Any:
        return {"rates": economics.revenue_rates(client, caller)}

    @app.post("/v1/revenue", status_code=201, summary="set a revenue rate (operator key)")
    def set_revenue(who: Operator, rate: RevenueRequest) -> Any:
        economics.set_revenue(client, Scope(who.tenants), tenant=rate.tenant,
                              workflow=rate.workflow,
                              revenue_per_success_usd=rate.revenue_per_success_usd,
                              valid_from=rate.valid_from, note=rate.note)
        return rate.model_dump()

    @app.get("/v1/export", summary="one page of an audit export (JSONL of raw, or Parquet)",
             responses={200: {"content": {"application/x-ndjson": {},
                                          "application/vnd.apache.parquet": {}}}})
    def export_events(
        caller: Caller, since: TimeParam = None, until: TimeParam = None,
        tenant: NameFilter = None, format: Literal["jsonl", "parquet"] = "jsonl",
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=export.MAX_EXPORT_PAGE)] = 50_000,
    ) -> Response:
        page = export.export_page(client, caller, since=_time(since, "since"),
                                  until=_time(until, "until"), fmt=format, tenant=tenant,
                                  cursor=cursor, limit=limit)
        headers = {"X-Export-Rows": str(page.rows)}
        if page.next_cursor:
            headers["X-Next-Cursor"] = page.next_cursor
        if page.total is not None:
            headers["X-Export-Total"] = str(page.total)
        media = "application/x-ndjson" if format == "jsonl" else "application/vnd.apache.parquet"
        return Response(page.data, media_type=media, headers=headers)

    @app.get("/v1/health", summary="pipeline health: freshness, rejects, degraded scopes")
    def health(caller: Caller) -> Any:
        return operations.pipeline_health(client, caller, sink=stats() if stats else None,
                                          limits=health_limits)

    @app.get("/v1/retention", summary="TTL per table, configured and applied (operator key)")
    def retention(_: Operator) -> Any:
        return {"tables": operations.retention(client, Scope(None), database,
                                               retention_days or {})}

    @app.post("/v1/sql", response_model=SqlResponse,
              summary="one read-only SQL statement, row and time limited (operator key)")
    def sql(_: Operator, request: SqlRequest) -> Any:
        try:
            return run_read_only(client, request.sql, request.parameters,
                                 max_rows=min(request.max_rows, max_rows),
                                 max_seconds=query_seconds).as_dict()
        except QueryRefused as exc:
            raise HTTPException(400, str(exc)) from None
        except ClickHouseError as exc:
            raise HTTPException(400, _first_line(str(exc))) from None

    @app.get("/v1/sink", summary="counters of the sink running in this process")
    def sink_stats(_: Operator) -> dict[str, Any]:
        return stats() if stats else {}

    approvals_api.install(app, client, principal)
    # Routes join the app's own list (not include_router, which this FastAPI keeps as one
    # opaque entry): every route stays visible to app.routes, OpenAPI and the route probes.
    app.router.routes.extend(watch_router(client, caller_scope).routes)  # GET /v1/watch
    app.router.routes.extend(control_router(client, caller_scope).routes)  # /v1/control/…
    from agentledger.otlp_http import install as install_otlp  # imports this module
    install_otlp(app, client, database)  # POST /v1/traces, GET /v1/control/stream
    return app


def _first_line(message: str) -> str:
    """ClickHouse errors carry stack traces; people need the first sentence."""
    for line in message.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            return line.strip()[:2000]
    return message.strip().splitlines()[0][:2000] if message.strip() else "query failed"
