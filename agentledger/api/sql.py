"""Read-only SQL for operators: one statement, row and time limited."""

from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from agentledger.api.deps import Config, Operator, Store
from agentledger.api.errors import first_line
from agentledger.api.responses import OrjsonResponse
from agentledger.queries.sql import QueryRefused, run_read_only

router = APIRouter(default_response_class=OrjsonResponse)


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
             summary="one read-only SQL statement, row and time limited (operator key)")
def sql(_: Operator, client: Store, config: Config, request: SqlRequest) -> Any:
    try:
        return run_read_only(client, request.sql, request.parameters,
                             max_rows=min(request.max_rows, config.max_rows),
                             max_seconds=config.query_seconds).as_dict()
    except QueryRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except ClickHouseError as exc:
        raise HTTPException(400, first_line(str(exc))) from None
