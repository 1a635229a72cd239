"""Events and runs: search, a run's timeline, its replay bundle, its hash-chain check."""

import functools
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from agentledger.api.deps import Caller, Store
from agentledger.api.params import (
    EventType,
    NameFilter,
    Outcome,
    RunRef,
    Status,
    TimeParam,
    time_param,
)
from agentledger.api.responses import OrjsonResponse
from agentledger.queries import events, inclusion, replay, timeline
from agentledger.queries.common import NotFound

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/v1/events", summary="search events: filters, time range, cursor pagination")
def search_events(
    caller: Caller, client: Store,
    tenant: NameFilter = None, agent: NameFilter = None, tool: NameFilter = None,
    event_type: EventType | None = None, status: Status | None = None,
    outcome: Outcome | None = None,
    trace_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    run_id: NameFilter = None, workflow: NameFilter = None,
    q: Annotated[str | None, Query(max_length=256, description="text in errors")] = None,
    since: TimeParam = None, until: TimeParam = None,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    order: Literal["asc", "desc"] = "desc",
    include_body: bool = False,
) -> Any:
    filters = events.SearchFilters(
        tenant=tenant, agent=agent, tool=tool, event_type=event_type, status=status,
        outcome=outcome, trace_id=trace_id, run_id=run_id, workflow=workflow, text=q,
        since=time_param(since, "since"), until=time_param(until, "until"))
    return events.search(client, caller, filters, limit=limit, cursor=cursor, order=order,
                         include_body=include_body)


@router.get("/v1/timeline/{ref}", summary="run timeline by run id or trace id")
def run_timeline(caller: Caller, client: Store, ref: RunRef) -> Any:
    return timeline.timeline(client, caller, ref)


@router.get("/v1/replay/{ref}", summary="replay bundle of a run or every run of a trace",
            response_model=None,
            responses={200: {"content": {"application/json": {}},
                             "description": "the bundle, streamed as it is read"}})
def replay_bundle(caller: Caller, client: Store, ref: RunRef) -> StreamingResponse:
    """Streamed, so a run of 100k events never sits whole in the store process; a missing
    or foreign run is still a 404 (decided before the first byte)."""
    return StreamingResponse(replay.replay_stream(client, caller, ref),
                             media_type="application/json")


@router.get("/v1/verify/{ref}", summary="hash-chain and column verification of stored runs")
def verify(caller: Caller, client: Store, ref: RunRef) -> Any:
    try:
        return replay.verify(client, caller, ref, agent_keys())
    except NotFound:  # deleted, or never landed: the sink's leaf record tells them apart
        gone = inclusion.vanished_run(client, caller, ref)
        if gone is None:
            raise
        return gone


@functools.cache
def agent_keys() -> dict[str, Ed25519PublicKey]:
    """The ed25519 public keys agents registered in the served tool policy's catalog
    (``public_key`` of an agent): their events must be signed by them."""
    from agentledger.api.permissions import loaded_gate
    from agentledger.core.signing import public_from_text

    return {name: public_from_text(text)
            for name, text in loaded_gate().catalog.agent_keys.items()}
