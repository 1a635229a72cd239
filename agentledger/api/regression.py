"""Regression sets over HTTP: what ``agentledger regression export|run`` call.

``GET /v1/regression/export`` turns the newest finished runs of a workflow into a set;
``GET /v1/regression/results`` reads back one label's runs of a set (each case's outcome
and cost), which the CLI compares paired (:mod:`agentledger.streams.regression`). Both are
scoped to the key's tenants; a set belongs to one tenant.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agentledger.api.deps import Caller, Store
from agentledger.api.params import NameFilter, Outcome, TimeParam, time_param
from agentledger.api.responses import OrjsonResponse

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/v1/regression/export", summary="a regression set from real finished runs")
def export(
    caller: Caller, client: Store,
    workflow: Annotated[str, Query(min_length=1, max_length=128)],
    n: Annotated[int, Query(ge=1, le=10_000, description="newest n finished runs")] = 200,
    outcome: Outcome | None = None, since: TimeParam = "30d", until: TimeParam = None,
    tenant: NameFilter = None,
) -> Any:
    from agentledger.queries import regression

    return regression.export(client, caller, workflow=workflow, n=n, outcome=outcome,
                             since=time_param(since, "since"),
                             until=time_param(until, "until"), tenant=tenant)


@router.get("/v1/regression/results", summary="one label's runs of a regression set")
def results(
    caller: Caller, client: Store,
    set_id: Annotated[str, Query(pattern=r"^[0-9a-f]{16}$")],
    label: Annotated[str, Query(min_length=1, max_length=48)],
    tenant: NameFilter = None,
) -> Any:
    from agentledger.queries import regression

    return regression.results(client, caller, set_id=set_id, label=label, tenant=tenant)
