"""Errors as answers: bad input 400 or 422 naming the parameter, another tenant's data 403,
nothing there 404, a store failure 503 with its first line — never a 500 with a trace."""

import logging

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agentledger.queries.common import Forbidden, NotFound, QueryError

log = logging.getLogger("agentledger.api")


def first_line(message: str) -> str:
    """ClickHouse errors carry stack traces; people need the first sentence."""
    for line in message.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            return line.strip()[:2000]
    return message.strip().splitlines()[0][:2000] if message.strip() else "query failed"


def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=403)


def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def _store_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("query failed", extra={"error": first_line(str(exc))})
    return JSONResponse({"detail": f"store error: {first_line(str(exc))}"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(QueryError, _bad_request)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ClickHouseError, _store_error)
