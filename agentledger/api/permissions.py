"""``GET /v1/permissions``: what each agent of a tenant may do, from the loaded policy.

The matrix (agents x tool actions → allow, deny or N approvals of a role, each with the
deciding rule and its conditions), who holds each approver role, and the policy version
with its diff from the previous one: :func:`agentledger.queries.permissions.view`, the
function the console page and ``agentledger tool-policy matrix`` use too.

The policy is the packaged tool policy the API's gate (``POST /v1/gate/check``) loads,
read once per process (a policy change takes a restart, as it does for the gate).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.params import Query

from agentledger.api.deps import Caller, settings_of
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import Principal
from agentledger.producers.gate import Gate, PolicyError
from agentledger.queries import permissions
from agentledger.queries.common import Scope

router = APIRouter(default_response_class=OrjsonResponse, tags=["policy"])


@functools.cache
def loaded_gate() -> Gate:
    """The packaged tool policy, as the API's gate loads it (once per process)."""
    return Gate.load(None)


def key_principals(request: Request) -> list[Principal]:
    """The keys this server accepts (its key ring: the keys file, the environment and the
    local operator key), as principals."""
    listed = getattr(request.app.state.keys, "principals", None)
    return list(listed()) if callable(listed) else []


def permissions_view(request: Request, scope: Scope, tenant: str | None) -> dict[str, Any]:
    """What the route and the console page show, for ``scope`` (the caller's)."""
    try:
        gate = loaded_gate()
    except PolicyError as exc:
        raise HTTPException(503, f"the tool policy does not load: {exc}") from None
    settings = settings_of(request.app)
    return permissions.view(gate, scope, tenant, key_principals(request), settings.data_dir)


@router.get("/v1/permissions", summary="agents x tool actions → allow, deny or N approvals "
                                       "of a role, with the deciding rule; role holders; "
                                       "policy version and diff")
async def get_permissions(
    request: Request, caller: Caller,
    tenant: Annotated[str | None, Query(max_length=128, description="default: the key's "
                                        "first tenant")] = None,
) -> Any:
    return await run_in_threadpool(permissions_view, request, caller, tenant)
