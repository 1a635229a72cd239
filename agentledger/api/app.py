"""``create_app``: the ledger API wired from its routers. Nothing is decided here.

Each query family has its router (events, operations, margins, the audit export, SQL,
approvals, watch, control), each route takes the client and the caller's scope as
dependencies (:mod:`agentledger.api.deps`), errors are mapped once
(:mod:`agentledger.api.errors`).
"""

from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import FastAPI

from agentledger import __version__
from agentledger.api import (
    approvals,
    audit_export,
    control,
    control_board,
    control_stream,
    events,
    gate,
    ledger_verify,
    margins,
    operations,
    overrides,
    permissions,
    reconcile,
    regression,
    sql,
    tool_gate,
    traces,
    watch,
    webhooks,
)
from agentledger.api.deps import ApiConfig
from agentledger.api.errors import install_error_handlers
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import KeySource
from agentledger.console import app as console
from agentledger.queries.pipeline import HealthLimits

DESCRIPTION = """The ledger HTTP API over ClickHouse.

In embedded mode this API lives in the process that owns the chdb store (beside the
sink), and it is how every other process reads the store. It serves its OpenAPI
document at ``/openapi.json`` and interactive docs at ``/docs``.

Every ``/v1`` route needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key``);
a key reads only its tenants' rows. No key or an unknown key → 401; a tenant outside the
key's scope → 403; another tenant's run id looks like a missing one (404), so keys cannot
probe which ids exist. Bad input is a 4xx naming the parameter, never a 500.
"""


def create_app(client: Client, keys: KeySource, *, database: str = "agentledger",
               retention_days: dict[str, int] | None = None,
               stats: Callable[[], dict[str, Any]] | None = None,
               max_rows: int = 10_000, query_seconds: float = 30.0,
               health_limits: HealthLimits | None = None) -> FastAPI:
    """The API over ``client``; ``keys`` decides who reads what. Services pass a
    :class:`agentledger.auth.ReloadingKeyRing` (the intake's own), so a removed key stops
    working here as soon as there; tests may pass a fixed ``KeyRing``."""
    app = FastAPI(title="agentledger", version=__version__, default_response_class=OrjsonResponse,
                  description=DESCRIPTION)
    app.state.store = client
    app.state.keys = keys
    app.state.config = ApiConfig(database=database, retention_days=retention_days, stats=stats,
                                 max_rows=max_rows, query_seconds=query_seconds,
                                 health_limits=health_limits)
    install_error_handlers(app)
    # Routes join the app's own list (not include_router, which this FastAPI keeps as one
    # opaque entry): every route stays visible to app.routes, OpenAPI and the route probes.
    for family in (operations, events, margins, audit_export, sql, approvals, watch,
                   control, gate):
        app.router.routes.extend(family.router.routes)
    app.router.routes.extend(overrides.router.routes)  # POST /v1/control/overrides
    app.router.routes.extend(reconcile.router.routes)  # POST /v1/reconcile
    app.router.routes.extend(ledger_verify.router.routes)  # POST /v1/ledger/verify
    app.router.routes.extend(regression.router.routes)  # GET /v1/regression/*
    app.router.routes.extend(permissions.router.routes)  # GET /v1/permissions
    app.router.routes.extend(webhooks.router.routes)  # GET /v1/webhooks
    app.router.routes.extend(control_board.router.routes)  # GET /v1/control/board
    traces.install(app)  # POST /v1/traces
    app.router.routes.extend(control_stream.router.routes)  # GET /v1/control/stream
    app.router.on_shutdown.append(lambda: control_stream.stop(app))
    # POST /v1/gate/check first: an agent asks it before every tool call, so it is
    # matched before the other routes' patterns are tried
    app.router.routes[:0] = tool_gate.router.routes
    app.router.on_shutdown.append(lambda: tool_gate.stop(app))
    console.install(app)  # the web console under /console (agentledger/console)
    return app
