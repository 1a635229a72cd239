"""``POST /v1/reconcile``: did every offset of ``agent.events`` the sink committed, and of
``otlp_spans`` the Kafka intake committed, land or get rejected?
(:mod:`agentledger.queries.reconcile`). Operator keys only: the answer is
about the whole log, every tenant's offsets. A POST, as it runs a check over the store and
Kafka rather than reading one stored answer."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agentledger.api.deps import Operator, Store, bootstrap_of
from agentledger.api.responses import OrjsonResponse
from agentledger.intake.kafka_loop import INTAKE_GROUP, OTLP_TOPIC
from agentledger.queries import reconcile as q
from agentledger.queries.common import parse_time

router = APIRouter(default_response_class=OrjsonResponse, tags=["operations"])


class ReconcileRequest(BaseModel):
    since: str | None = Field(default=None, max_length=64,
                              description="from: 7d, 24h, an ISO date/datetime; default: "
                                          "the oldest offset Kafka retains")
    otlp_topic: str = Field(default=OTLP_TOPIC, max_length=249, pattern=r"^[A-Za-z0-9._-]+$",
                            description="the topic the Kafka intake reads")
    otlp_group: str = Field(default=INTAKE_GROUP, max_length=249,
                            pattern=r"^[A-Za-z0-9._-]+$",
                            description="the Kafka intake's consumer group")


def _run(request: Request, client: Any, body: ReconcileRequest) -> dict[str, Any]:
    from confluent_kafka import KafkaException

    settings, bootstrap = bootstrap_of(request.app)
    since = parse_time(body.since)
    try:
        extent = q.kafka_extent(bootstrap, settings.sink_group, since=since,
                                security=settings.kafka_security)
    except (LookupError, KafkaException) as exc:
        raise HTTPException(503, f"Kafka: {exc}", headers={"Retry-After": "5"}) from None
    reports = [q.reconcile(client, extent)]
    try:
        otlp_extent = q.kafka_extent(bootstrap, body.otlp_group, topic=body.otlp_topic,
                                     since=since, security=settings.kafka_security)
    except LookupError:  # no Kafka intake in this deployment: nothing to account for
        reports.append({"topic": body.otlp_topic, "ok": True, "absent": True, "expected": 0,
                        "accounted": 0, "missing": 0, "partitions": []})
    except KafkaException as exc:
        raise HTTPException(503, f"Kafka: {exc}", headers={"Retry-After": "5"}) from None
    else:
        reports.append(q.reconcile_otlp(client, bootstrap, otlp_extent,
                                        topic=body.otlp_topic,
                                        security=settings.kafka_security))
    return {"ok": all(r["ok"] for r in reports),
            **{k: sum(r[k] for r in reports) for k in ("expected", "accounted", "missing")},
            "topics": reports,
            "problems": [line for r in reports for line in q.gap_lines(r)]}


@router.post("/v1/reconcile", summary="every committed offset of agent.events and "
                                      "otlp_spans landed or was rejected; gaps named "
                                      "(operator key)")
async def reconcile(body: ReconcileRequest, request: Request, who: Operator,
                    client: Store) -> Any:
    return await run_in_threadpool(_run, request, client, body)
