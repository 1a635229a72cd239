"""Webhooks: the outgoing webhooks of the key's tenants and every delivery with its attempts.

The same answer as ``GET /v1/webhooks`` (:func:`agentledger.api.webhooks.webhooks_view`):
hooks without secrets or URL paths, deliveries read from ``agent.webhooks``, the key's
tenants only (docs/notifications.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from agentledger.api.webhooks import webhooks_view
from agentledger.console.session import SignedIn, render

router = APIRouter()


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _shown(delivery: dict[str, Any]) -> dict[str, Any]:
    return {**delivery, "created": _when(delivery["created_at"]),
            "next": _when(delivery.get("next_attempt_at")),
            "tries": [{**a, "when": _when(a["ts"])} for a in delivery["attempts"]]}


@router.get("/console/webhooks", response_class=HTMLResponse, include_in_schema=False)
async def webhooks(request: Request, user: SignedIn,
                   webhook: Annotated[str, Query(max_length=128)] = "") -> Response:
    found = await run_in_threadpool(webhooks_view, request.app, user.scope,
                                    webhook=webhook or None)
    return render(request, "webhooks.html", user=user, hooks=found["webhooks"],
                  config_error=found["config_error"], webhook=webhook,
                  deliveries=[_shown(d) for d in found["deliveries"]])
