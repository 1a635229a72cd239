"""``GET /v1/control/explain`` and ``GET /v1/control/results``: why a scope is in its
state, and the tool results a policy backtest replays (compact rows, big pages).

Its own router, included by :func:`agentledger.api.create_app`; scoped by the caller's
key like every route.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency itself (a
# closure variable) in the route's signature, not a string it cannot resolve.
from collections.abc import Callable
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, Query

from agentledger.queries import control
from agentledger.queries.common import Scope, parse_time


def control_router(client: Client, caller_scope: Callable[..., Scope]) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/control/explain", summary="why a breaker or agent is in its state: "
                                                "rule, window, counts, bound, trigger events")
    def explain(
        scope: Annotated[str, Query(min_length=3, max_length=260,
                                    description="TENANT/AGENT or TENANT/*/TOOL")],
        caller: Annotated[Scope, Depends(caller_scope)],
    ) -> Any:
        return control.explain(client, caller, scope)

    @router.get("/v1/control/results", summary="tool results in event-time order, compact, "
                                                "paged (for policy backtests)")
    def results(
        caller: Annotated[Scope, Depends(caller_scope)],
        since: Annotated[str | None, Query(max_length=64)] = "7d",
        until: Annotated[str | None, Query(max_length=64)] = None,
        tenant: Annotated[str | None, Query(max_length=128)] = None,
        after_us: Annotated[int | None, Query(description="epoch microseconds")] = None,
        after_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=control.MAX_RESULTS_PAGE)] = 50_000,
    ) -> Any:
        after = (after_us, after_id) if after_us is not None and after_id is not None else None
        return control.tool_results(client, caller, parse_time(since), parse_time(until),
                                    tenant=tenant, after=after, limit=limit)

    return router
