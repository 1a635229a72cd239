"""``GET /v1/control/explain`` and ``GET /v1/control/results``: why a scope is in its
state, and the tool results a policy backtest replays (compact rows, big pages).

Scoped by the caller's key like every route.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agentledger.api.deps import Caller, Store
from agentledger.queries import control
from agentledger.queries.common import parse_time

router = APIRouter()


@router.get("/v1/control/explain", summary="why a breaker or agent is in its state: "
                                            "rule, window, counts, bound, trigger events")
def explain(
    scope: Annotated[str, Query(min_length=3, max_length=260,
                                description="TENANT/AGENT or TENANT/*/TOOL")],
    caller: Caller, client: Store,
) -> Any:
    return control.explain(client, caller, scope)


@router.get("/v1/control/results", summary="tool results in event-time order, compact, "
                                            "paged (for policy backtests)")
def results(
    caller: Caller, client: Store,
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
