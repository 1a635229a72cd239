"""``install``: the console's pages, static files, sessions and error pages on the API app.

The routes join the app's own route list (as the API's families do), so the console is
served by the same process, keys and store as ``/v1``. Errors under ``/console`` render
as pages (a 404 page for another tenant's id, a 403 for a missing CSRF token); every
other path keeps the API's JSON errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentledger.api.errors import first_line
from agentledger.console import control, inbox, permissions, runs, search, signin, webhooks
from agentledger.console.session import SessionStore, SignInRequired, render, sign_in_url
from agentledger.queries.common import Forbidden, NotFound, QueryError

log = logging.getLogger("agentledger.console")

PAGES = (signin, inbox, runs, search, permissions, control, webhooks)
"""Each page module's ``router``; a new page adds its module here (see the package doc)."""

STATIC = Path(__file__).with_name("static")

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def _page_error(request: Request, status: int, message: str) -> Response:
    titles = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found",
              409: "Conflict", 413: "Too large", 422: "Bad request", 503: "Unavailable"}
    return render(request, "error.html", status_code=status, status=status,
                  title=titles.get(status, "Error"), message=message)


def _console_status(exc: Exception) -> tuple[int, str]:
    """The status and message a console page shows for ``exc``. Another tenant's data
    (403 in the API) is a 404 here, as an unknown id: a page never says whose it is."""
    match exc:
        case NotFound() | Forbidden():
            return 404, "There is nothing here, or nothing you may see."
        case QueryError():
            return 400, str(exc)
        case RequestValidationError():
            problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                        for e in exc.errors()]
            return 422, "; ".join(problems)
        case StarletteHTTPException():
            return exc.status_code, str(exc.detail)
        case ClickHouseError():
            return 503, f"store error: {first_line(str(exc))}"
    return 500, "Something went wrong on the server; it has been logged."


def _wrap(app: FastAPI, kind: type[Exception] | int, fallback: Handler | None) -> None:
    async def handler(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/console"):
            if isinstance(exc, SignInRequired):
                if request.method in ("GET", "HEAD"):
                    return RedirectResponse(sign_in_url(request), status_code=303)
                return _page_error(request, 403, "Sign in first.")
            status, message = _console_status(exc)
            if status == 500:
                log.error("console page failed", exc_info=exc)
            return _page_error(request, status, message)
        if fallback is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        answer = fallback(request, exc)
        return await answer if isinstance(answer, Awaitable) else answer

    app.add_exception_handler(kind, handler)


def install(app: FastAPI) -> None:
    """The console on ``app``: call after the API's error handlers are installed."""
    app.state.console_sessions = SessionStore()
    for page in PAGES:
        app.router.routes.extend(page.router.routes)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    handlers: dict[Any, Any] = dict(app.exception_handlers)
    for kind in (NotFound, Forbidden, QueryError, RequestValidationError, ClickHouseError):
        _wrap(app, kind, handlers.get(kind))
    _wrap(app, StarletteHTTPException,
          handlers.get(StarletteHTTPException, http_exception_handler))
    _wrap(app, SignInRequired, None)
    _wrap(app, Exception, None)
