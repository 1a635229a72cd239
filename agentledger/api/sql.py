"""Read-only SQL for operators: one statement over the ledger, row and time limited.

Refusals are 400s naming the reason (:mod:`agentledger.queries.sql` decides on the
engine's own parse). Against a ClickHouse server with
``AGENTLEDGER_CLICKHOUSE_READONLY_DSN`` set, the statement runs as that read-only user,
so even a statement the check missed meets the server's grants; the embedded store has
no users, so there the check and the per-query ``readonly=1`` are the locks.
"""

import threading
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from agentledger.api.deps import Config, Operator, settings_of
from agentledger.api.errors import first_line
from agentledger.api.responses import OrjsonResponse
from agentledger.core.store import client_for
from agentledger.queries.sql import QueryRefused, run_read_only

router = APIRouter(default_response_class=OrjsonResponse)
_lock = threading.Lock()


def sql_client(request: Request) -> tuple[Client, bool]:
    """The client SQL runs on, and whether it is the dedicated read-only user's.

    Built once per app: the read-only DSN's client when configured, else the store's.
    """
    state = request.app.state
    with _lock:
        chosen: tuple[Client, bool] | None = getattr(state, "sql_store", None)
        if chosen is None:
            settings = settings_of(request.app)
            if settings.clickhouse_readonly_dsn is not None and not settings.embedded_store:
                chosen = (client_for(settings, readonly=True), True)
            else:
                chosen = (state.store, False)
            state.sql_store = chosen
    return chosen


SqlStore = Annotated[tuple[Client, bool], Depends(sql_client)]


class SqlRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only statement")
    parameters: dict[str, Any] | None = Field(
        default=None, description="bound as {name:Type} placeholders, never spliced")
    max_rows: int = Field(default=10_000, ge=1, le=1_000_000)


class SqlResponse(BaseModel):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


@router.post("/v1/sql", response_model=SqlResponse,
             summary="one read-only SQL statement over the ledger, row and time limited "
                     "(operator key); 400 names why a statement is refused",
             responses={400: {"description": "refused or failed; the detail says why"}})
def sql(_: Operator, store: SqlStore, config: Config, request: SqlRequest) -> Any:
    client, dedicated_user = store
    try:
        return run_read_only(client, request.sql, request.parameters,
                             max_rows=min(request.max_rows, config.max_rows),
                             max_seconds=config.query_seconds, database=config.database,
                             set_readonly=not dedicated_user).as_dict()
    except QueryRefused as exc:
        raise HTTPException(400, f"refused: {exc}") from None
    except ClickHouseError as exc:
        raise HTTPException(400, first_line(str(exc))) from None
