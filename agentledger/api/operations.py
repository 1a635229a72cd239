"""Operations: liveness, pipeline health, tool health, control state and history,
retention, and the in-process sink's counters."""

from typing import Annotated, Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import APIRouter, HTTPException, Query

from agentledger import __version__
from agentledger.api.deps import Caller, Config, Operator, Store
from agentledger.api.errors import first_line
from agentledger.api.params import ControlKind, NameFilter, TimeParam, time_param
from agentledger.api.responses import OrjsonResponse
from agentledger.queries import operations
from agentledger.queries.common import Scope

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/healthz", summary="liveness of the API and its store (no key needed)")
def healthz(client: Store) -> dict[str, Any]:
    try:
        client.command("SELECT 1")
    except ClickHouseError as exc:
        raise HTTPException(503, f"store unavailable: {first_line(str(exc))}") from None
    return {"status": "ok", "version": __version__}


@router.get("/v1/tools/health", summary="per-tool calls, error rate, latency quantiles")
def tools_health(
    caller: Caller, client: Store, tenant: NameFilter = None, agent: NameFilter = None,
    tool: NameFilter = None, since: TimeParam = "24h", until: TimeParam = None,
    bucket_minutes: Annotated[int | None, Query(ge=1, le=10_080)] = None,
) -> Any:
    return operations.tool_health(client, caller, time_param(since, "since"),
                                  time_param(until, "until"), tenant=tenant, agent=agent,
                                  tool=tool, bucket_minutes=bucket_minutes)


@router.get("/v1/control/history", summary="breaker, safe-mode, budget, override transitions")
def control_history(
    caller: Caller, client: Store, tenant: NameFilter = None, kind: ControlKind | None = None,
    since: TimeParam = None, until: TimeParam = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> Any:
    return operations.control_history(client, caller, time_param(since, "since"),
                                      time_param(until, "until"), tenant=tenant, kind=kind,
                                      limit=limit)


@router.get("/v1/control/state", summary="current state of every controlled scope")
def control_state(caller: Caller, client: Store, tenant: NameFilter = None,
                  active_only: bool = False) -> Any:
    return operations.control_state(client, caller, tenant=tenant, active_only=active_only)


@router.get("/v1/health", summary="pipeline health: freshness, rejects, degraded scopes")
def health(caller: Caller, client: Store, config: Config) -> Any:
    return operations.pipeline_health(client, caller,
                                      sink=config.stats() if config.stats else None,
                                      limits=config.health_limits)


@router.get("/v1/retention", summary="TTL per table, configured and applied (operator key)")
def retention(_: Operator, client: Store, config: Config) -> Any:
    return {"tables": operations.retention(client, Scope(None), config.database,
                                           config.retention_days or {})}


@router.get("/v1/sink", summary="counters of the sink running in this process")
def sink_stats(_: Operator, config: Config) -> dict[str, Any]:
    return config.stats() if config.stats else {}
