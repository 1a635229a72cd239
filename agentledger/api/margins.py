"""Unit economics: margins per group, and the revenue rates behind them."""

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from agentledger.api.deps import Caller, Operator, Store
from agentledger.api.params import ID_PATTERN, NameFilter, TimeParam, time_param
from agentledger.api.responses import OrjsonResponse
from agentledger.queries import margins as margin_queries
from agentledger.queries.common import Scope

router = APIRouter(default_response_class=OrjsonResponse)


class RevenueRequest(BaseModel):
    tenant: str = Field(pattern=ID_PATTERN)
    workflow: str = Field(pattern=ID_PATTERN)
    revenue_per_success_usd: float = Field(ge=0, le=1_000_000)
    valid_from: dt.date
    note: str = Field(default="", max_length=1000)


@router.get("/v1/margins", summary="unit economics and gross margin per group")
def margins(
    caller: Caller, client: Store,
    by: Literal["workflow", "tenant", "agent", "model", "day"] = "workflow",
    since: TimeParam = "30d", until: TimeParam = None, tenant: NameFilter = None,
    workflow: NameFilter = None,
) -> Any:
    return margin_queries.margins(client, caller, by, time_param(since, "since"),
                             time_param(until, "until"), tenant=tenant, workflow=workflow)


@router.get("/v1/revenue", summary="revenue per successful task, per tenant and workflow")
def revenue(caller: Caller, client: Store) -> Any:
    return {"rates": margin_queries.revenue_rates(client, caller)}


@router.post("/v1/revenue", status_code=201, summary="set a revenue rate (operator key)")
def set_revenue(who: Operator, client: Store, rate: RevenueRequest) -> Any:
    margin_queries.set_revenue(client, Scope(who.tenants), tenant=rate.tenant,
                          workflow=rate.workflow,
                          revenue_per_success_usd=rate.revenue_per_success_usd,
                          valid_from=rate.valid_from, note=rate.note)
    return rate.model_dump()
