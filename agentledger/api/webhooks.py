"""``GET /v1/webhooks``: the outgoing webhooks a key's tenants get, and their deliveries
with every attempt (docs/notifications.md).

Deliveries are read from ``agent.webhooks`` by one follower per API process, started on
first use (it reads the compacted topic from the start, then keeps up). The configured
hooks come from the webhooks file, shown without secrets or URL paths.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool

from agentledger.api.deps import Caller, bootstrap_of, settings_of
from agentledger.api.responses import OrjsonResponse
from agentledger.notify import config as cfg
from agentledger.notify.deliveries import DeliveryFollower, visible
from agentledger.queries.common import Scope

router = APIRouter(default_response_class=OrjsonResponse, tags=["webhooks"])
_lock = threading.Lock()


def follower_of(app: FastAPI) -> DeliveryFollower:
    """The app's delivery follower, started (and caught up) on first use."""
    found: DeliveryFollower | None = getattr(app.state, "webhook_deliveries", None)
    if found is not None:
        return found
    with _lock:
        found = getattr(app.state, "webhook_deliveries", None)
        if found is None:
            settings, bootstrap = bootstrap_of(app)
            found = DeliveryFollower(bootstrap, security=settings.kafka_security).start()
            found.wait_caught_up(10)
            app.state.webhook_deliveries = found
            app.router.on_shutdown.append(found.close)
    return found


def webhooks_view(app: FastAPI, scope: Scope, *, tenant: str | None = None,
                  webhook: str | None = None, limit: int = 200) -> dict[str, Any]:
    """What the route and the console's Webhooks page show for ``scope``."""
    scope = scope.narrow(tenant)
    path = cfg.webhooks_file(settings_of(app))
    error = None
    try:
        hooks = cfg.load(path).webhooks
    except cfg.ConfigError as exc:
        hooks, error = [], str(exc) if scope.tenants is None else "the webhooks file is broken"
    shown = [h.public() for h in hooks if scope.tenants is None or "*" in h.tenants
             or scope.tenants & set(h.tenants)]
    records = list(follower_of(app).records.values())
    return {"webhooks": shown, "config_error": error,
            "deliveries": visible(records, scope, webhook=webhook, limit=limit)}


@router.get("/v1/webhooks", summary="configured outgoing webhooks (no secrets) and recent "
                                    "deliveries with every attempt")
async def get_webhooks(
    request: Request, caller: Caller,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    webhook: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Any:
    return await run_in_threadpool(webhooks_view, request.app, caller, tenant=tenant,
                                   webhook=webhook, limit=limit)
