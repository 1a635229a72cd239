"""The dependencies every route takes: the caller (from its API key), the caller's scope
(the tenants it may read), the ClickHouse client, and the API's limits.

:func:`agentledger.api.create_app` puts the client, the key ring and the limits on
``app.state``; routes reach them only through these.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from agentledger.auth import Principal
from agentledger.core import discovery
from agentledger.core.settings import Settings, load_settings
from agentledger.queries.common import Scope
from agentledger.queries.pipeline import HealthLimits


@dataclass(frozen=True)
class ApiConfig:
    """What :func:`agentledger.api.create_app` was told beside the client and the keys."""

    database: str = "agentledger"
    retention_days: dict[str, int] | None = None
    stats: Callable[[], dict[str, Any]] | None = None
    max_rows: int = 10_000
    query_seconds: float = 30.0
    health_limits: HealthLimits | None = None


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def presented_key(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  header: Annotated[str | None, Depends(_header)]) -> str:
    """The key the caller sent; 401 without one. A long-lived route (the control stream)
    keeps it to ask the key ring again later: a key removed meanwhile ends the stream."""
    presented = header or (bearer.credentials if bearer else None)
    if not presented:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or "
                                 "'X-API-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})
    return presented


def principal(request: Request, presented: Annotated[str, Depends(presented_key)]) -> Principal:
    """The caller, from its key; 401 without a known one. The key ring is the service's
    :class:`agentledger.auth.ReloadingKeyRing`, so a key removed from the keys file gets
    401 here within a second, as it does from the OTLP intake."""
    found: Principal | None = request.app.state.keys.authenticate(presented)
    if found is None:
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


def caller_scope(who: Annotated[Principal, Depends(principal)]) -> Scope:
    return Scope(who.tenants)


def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.operator:
        raise HTTPException(403, "this needs an operator key (tenants: ['*'])")
    return who


def store_client(request: Request) -> Client:
    """The ClickHouse client the API reads (and, for revenue rates, writes)."""
    client: Client = request.app.state.store
    return client


def api_config(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.config
    return config


Who = Annotated[Principal, Depends(principal)]
Caller = Annotated[Scope, Depends(caller_scope)]
Operator = Annotated[Principal, Depends(operator)]
Store = Annotated[Client, Depends(store_client)]
Config = Annotated[ApiConfig, Depends(api_config)]


def settings_of(app: FastAPI) -> Settings:
    """The settings of the intake and the control stream (a test may set its own)."""
    settings: Settings | None = getattr(app.state, "otlp_settings", None)
    return settings if settings is not None else load_settings()


def bootstrap_of(app: FastAPI) -> tuple[Settings, str]:
    """The settings and the Kafka bootstrap servers; 503 when no broker is known."""
    settings = settings_of(app)
    bootstrap = discovery.bootstrap_servers(settings)
    if not bootstrap:
        raise HTTPException(503, "no Kafka broker configured for the intake "
                                 "(AGENTLEDGER_KAFKA_BOOTSTRAP)", headers={"Retry-After": "5"})
    return settings, bootstrap
