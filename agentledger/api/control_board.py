"""``GET /v1/control/board``: every breaker, safe mode, override and exceeded run budget
in the key's tenants, current state first (:mod:`agentledger.queries.control_board`, the
query the console's Control page reads)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agentledger.api.deps import Caller, Store
from agentledger.queries import control_board

router = APIRouter()


@router.get("/v1/control/board", summary="current breakers, safe modes, overrides and "
                                          "exceeded budgets, with reasons and who held")
def get_board(caller: Caller, client: Store,
              tenant: Annotated[str | None, Query(max_length=128)] = None) -> Any:
    return control_board.board(client, caller, tenant=tenant)
