"""Control: breakers, safe modes, overrides and exceeded budgets, why each is in its state,
and holding or releasing an agent.

Reads :func:`agentledger.queries.control_board.board` (``GET /v1/control/board``) and
:func:`agentledger.queries.control.explain` (``GET /v1/control/explain``) with the key's
scope. A hold or release posts to the same code as ``POST /v1/control/overrides``
(:func:`agentledger.api.overrides.create_override`): operator keys only, a required
reason, signed and recorded with the key's name as ``by`` and as a ``human.override``
event (:mod:`agentledger.api.override_event`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from agentledger.api.deps import Store
from agentledger.api.overrides import OverrideRequest, create_override
from agentledger.console.session import CheckedForm, SignedIn, User, flash, render
from agentledger.queries import control, control_board
from agentledger.queries.common import NotFound, QueryError

router = APIRouter()
STATES = ("read_only", "halted", "normal", "clear")


def _explain(client: Any, user: User, scope: str) -> tuple[dict[str, Any] | None, str]:
    if not scope:
        return None, ""
    try:
        return control.explain(client, user.scope, scope), ""
    except NotFound:  # a scope of the key's tenant nobody decided about (yet)
        return None, f"The control loop has not decided anything about {scope}."
    except QueryError as exc:
        return None, str(exc)


@router.get("/console/control", response_class=HTMLResponse, include_in_schema=False)
def control_page(request: Request, user: SignedIn, client: Store,
                 scope: Annotated[str, Query(max_length=260)] = "") -> Response:
    board = control_board.board(client, user.scope)
    explained, note = _explain(client, user, scope)
    tenant, _, agent = scope.partition("/")
    return render(request, "control.html", user=user, board=board, scope=scope,
                  explained=explained, note=note, states=STATES,
                  hold_tenant=tenant if "/" not in agent else "",
                  hold_agent=agent if "/" not in agent else "")


@router.post("/console/control/override", include_in_schema=False)
async def override(request: Request, user: SignedIn, form: CheckedForm) -> Response:
    tenant, agent = form.get("tenant", "").strip(), form.get("agent", "").strip()
    back = f"/console/control?scope={tenant}/{agent}" if tenant and agent else "/console/control"
    if not user.principal.operator:
        flash(user, "Not done: holding or releasing an agent needs an operator key.")
        return RedirectResponse(back, status_code=303)
    try:
        body = OverrideRequest(tenant=tenant, agent=agent, state=form.get("state", ""),
                               reason=form.get("reason", ""))
    except ValidationError as exc:
        first = exc.errors()[0]
        flash(user, f"Not done: {'.'.join(map(str, first['loc']))}: {first['msg']}")
        return RedirectResponse(back, status_code=303)
    try:
        done = await create_override(body, request, user.principal)
    except HTTPException as exc:
        flash(user, f"Not done: {exc.detail}")
        return RedirectResponse(back, status_code=303)
    flash(user, f"{done['scope']}: override {done['state']} by {done['by']}, recorded as "
                f"human.override in run {done.get('run_id', '?')}.")
    return RedirectResponse(back, status_code=303)

