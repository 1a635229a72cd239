"""The ledger HTTP API over ClickHouse.

In embedded mode this API lives in the process that owns the chdb store (beside the
sink), and it is how every other process reads the store. It serves its OpenAPI
document at ``/openapi.json``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from agentledger import __version__
from agentledger.query import QueryRefused, run_read_only


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


def create_app(client: Client, *, stats: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    app = FastAPI(title="agentledger", version=__version__, default_response_class=OrjsonResponse)

    @app.get("/healthz", summary="liveness of the API and its store")
    def healthz() -> dict[str, Any]:
        try:
            client.command("SELECT 1")
        except ClickHouseError as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from None
        return {"status": "ok", "version": __version__}

    @app.post("/v1/sql", response_model=SqlResponse, summary="one read-only SQL statement")
    def sql(request: SqlRequest) -> Any:
        try:
            return run_read_only(client, request.sql, request.parameters,
                                 max_rows=request.max_rows).as_dict()
        except QueryRefused as exc:
            raise HTTPException(400, str(exc)) from None
        except ClickHouseError as exc:
            raise HTTPException(400, _first_line(str(exc))) from None

    @app.get("/v1/sink", summary="counters of the sink running in this process")
    def sink_stats() -> dict[str, Any]:
        return stats() if stats else {}

    return app


def _first_line(message: str) -> str:
    """ClickHouse errors carry stack traces; people need the first sentence."""
    for line in message.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            return line.strip()[:2000]
    return message.strip().splitlines()[0][:2000] if message.strip() else "query failed"
