"""The release gate over HTTP: ``GET /v1/gate``, what ``agentledger gate`` calls.

A cohort is ``key=value`` (``agent_version``, ``prompt_version``, ``model``,
``policy_version``, ``tool_version``; several joined by ``,``). A cohort that does not
parse, two identical cohorts, overlapping cohorts or a bad ``config`` are a 400 naming the
problem. The answer carries the verdict and ``exit_code`` the CLI exits with.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from agentledger.api.deps import Caller, Store
from agentledger.api.params import NameFilter, TimeParam, time_param
from agentledger.api.responses import OrjsonResponse

router = APIRouter(default_response_class=OrjsonResponse)
Cohort = Annotated[str, Query(min_length=3, max_length=600,
                              description="key=value[,key=value]: agent_version, "
                                          "prompt_version, model, policy_version, tool_version")]


@router.get("/v1/gate", summary="release gate: did the candidate cohort do worse?")
def gate(
    caller: Caller, client: Store, baseline: Cohort, candidate: Cohort,
    since: TimeParam = "24h", until: TimeParam = None, workflow: NameFilter = None,
    tenant: NameFilter = None,
    config: Annotated[str | None, Query(max_length=8000,
                                        description="a gate.yaml's text; default: the "
                                                    "packaged one")] = None,
) -> Any:
    # Imported here: the statistics bring scipy, which every process serving the API (the
    # OTLP intake's included) would otherwise load at start for a route most never serve.
    from agentledger.queries import gate as gate_queries

    return gate_queries.gate(client, caller, baseline=baseline, candidate=candidate,
                             since=time_param(since, "since"),
                             until=time_param(until, "until"), workflow=workflow,
                             tenant=tenant, config=config)
