"""``GET /v1/watch``: one snapshot for the live terminal view (``agentledger watch``).

Its own router, included by :func:`agentledger.api.create_app`, so the live view can grow
without touching the rest of the API. Scoped by the caller's key like every route; the
pipeline's figures (lags, heartbeats, dead letters) only for operator keys.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency itself (a
# closure variable) in the route's signature, not a string it cannot resolve.
from collections.abc import Callable
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, Query

from agentledger.queries import watch
from agentledger.queries.common import Scope


def watch_router(client: Client, caller_scope: Callable[..., Scope]) -> APIRouter:
    """The route over ``client``; ``caller_scope`` is the API's key → tenants dependency."""
    router = APIRouter()

    @router.get("/v1/watch", summary="live snapshot: throughput, lags, DLQ, breakers, "
                                      "safe modes, expensive runs, cost per success")
    def snapshot(
        scope: Annotated[Scope, Depends(caller_scope)],
        recent_minutes: Annotated[int, Query(ge=1, le=1440, description=(
            "how far back transitions, runs and cost per success look"))] = 15,
    ) -> Any:
        return watch.snapshot(client, scope, recent_minutes=recent_minutes)

    return router
