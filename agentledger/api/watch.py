"""``GET /v1/watch``: one snapshot for the live terminal view (``agentledger watch``).

Scoped by the caller's key like every route; the pipeline's figures (lags, heartbeats,
dead letters) only for operator keys.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agentledger.api.deps import Caller, Store
from agentledger.queries import watch

router = APIRouter()


@router.get("/v1/watch", summary="live snapshot: throughput, lags, DLQ, breakers, "
                                  "safe modes, expensive runs, cost per success")
def snapshot(
    scope: Caller, client: Store,
    recent_minutes: Annotated[int, Query(ge=1, le=1440, description=(
        "how far back transitions, runs and cost per success look"))] = 15,
) -> Any:
    return watch.snapshot(client, scope, recent_minutes=recent_minutes)
