"""``POST /v1/reconcile``: did every offset of ``agent.events`` the sink committed land or
get rejected? (:mod:`agentledger.queries.reconcile`). Operator keys only: the answer is
about the whole log, every tenant's offsets. A POST, as it runs a check over the store and
Kafka rather than reading one stored answer."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agentledger.api.deps import Operator, Store, bootstrap_of
from agentledger.api.responses import OrjsonResponse
from agentledger.queries import reconcile as q
from agentledger.queries.common import parse_time

router = APIRouter(default_response_class=OrjsonResponse, tags=["operations"])


class ReconcileRequest(BaseModel):
    since: str | None = Field(default=None, max_length=64,
                              description="from: 7d, 24h, an ISO date/datetime; default: "
                                          "the oldest offset Kafka retains")


def _run(request: Request, client: Any, since: str | None) -> dict[str, Any]:
    from confluent_kafka import KafkaException

    settings, bootstrap = bootstrap_of(request.app)
    try:
        extent = q.kafka_extent(bootstrap, settings.sink_group, since=parse_time(since),
                                security=settings.kafka_security)
    except (LookupError, KafkaException) as exc:
        raise HTTPException(503, f"Kafka: {exc}", headers={"Retry-After": "5"}) from None
    report = q.reconcile(client, extent)
    report["problems"] = q.gap_lines(report)
    return report


@router.post("/v1/reconcile", summary="every committed offset of agent.events landed or "
                                      "was rejected; gaps named (operator key)")
async def reconcile(body: ReconcileRequest, request: Request, who: Operator,
                    client: Store) -> Any:
    return await run_in_threadpool(_run, request, client, body.since)
