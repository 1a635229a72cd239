"""The approvals inbox: the requests the signed-in key may decide, and their history.

Reads and votes go through :mod:`agentledger.api.approvals` — the very functions behind
``GET /v1/approvals`` and ``POST /v1/approvals/{id}/approve|deny|assign`` — so the
checks (the queue's role or a delegation, never the agent's own key, one vote per key,
not decided nor expired) and the signed state the waiting agent follows are the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from agentledger.api import approvals as api
from agentledger.api.deps import Store
from agentledger.console.session import CheckedForm, SignedIn, User, flash, render
from agentledger.queries import approvals as q
from agentledger.queries.common import parse_time

router = APIRouter()
HISTORY = 50
LIMIT = 200
"""Requests read per inbox view: the newest 200 of the window, as `GET /v1/approvals`."""
WINDOW = "7d"


def _clock(item: dict[str, Any]) -> str:
    """The SLA clock as a person reads it."""
    sla = item.get("sla_s")
    if not sla:
        return "no SLA"
    left = float(sla) - float(item["age_s"])
    if left >= 0:
        return f"due in {_span(left)}"
    return f"SLA breached {_span(-left)} ago"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _latency(item: dict[str, Any]) -> str:
    if item.get("latency_ms") is not None:
        return _span(float(item["latency_ms"]) / 1000)
    resolved = item.get("resolved_at") or next(
        (v["ts"] for v in reversed(item.get("votes") or [])), None)
    if isinstance(resolved, dt.datetime) and item["status"] != "expired":
        return _span((resolved - item["requested_at"]).total_seconds())
    return "—"


def mine(user: User, item: dict[str, Any]) -> bool:
    """The key may decide this request: it holds its current queue or was delegated it."""
    return item["queue"] in user.principal.roles or user.name in item.get("delegates", [])


@router.get("/console/inbox", response_class=HTMLResponse, include_in_schema=False)
def inbox(request: Request, user: SignedIn, client: Store) -> Response:
    found = api.views(request, user.principal, client, since=parse_time(WINDOW), limit=LIMIT)
    waiting = [i for i in found if i["status"] == "pending"]
    first = min((i["requested_at"] for i in waiting), default=None)
    rules = q.escalation_rules(client, user.scope, [i["run_id"] for i in waiting],
                               since=first - dt.timedelta(hours=1) if first else None)
    pending, history = [], []
    for item in found:
        item["clock"] = _clock(item)
        item["latency"] = _latency(item)
        item["rule"] = rules.get((item["run_id"], item["action"]))
        item["voted"] = any(v["approver"] == user.name for v in item["votes"])
        if item["status"] == "pending" and mine(user, item):
            pending.append(item)
        elif item["status"] != "pending" and (mine(user, item) or user.principal.operator):
            history.append(item)
    queues = sorted(user.principal.roles)
    return render(request, "inbox.html", user=user, pending=pending,
                  history=history[:HISTORY], queues=queues, window=WINDOW)


def _attempt(user: User, act: Callable[[], str]) -> Response:
    """Run ``act``; a refusal (403 not your queue, 409 decided already, ...) comes back
    to the inbox as a message, an unknown or foreign id as the 404 page."""
    try:
        flash(user, act())
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        flash(user, f"Not done: {exc.detail}")
    except ValidationError as exc:
        flash(user, f"Not done: {exc.errors()[0]['msg']}")
    return RedirectResponse("/console/inbox", status_code=303)


def _reason(form: dict[str, str]) -> str:
    reason = form.get("reason", "").strip()
    if not reason:
        raise HTTPException(422, "a reason is required")
    return reason[:2048]


@router.post("/console/inbox/{approval_id}/assign", include_in_schema=False)
def reassign(request: Request, user: SignedIn, form: CheckedForm, client: Store,
             approval_id: Annotated[str, Path(pattern=api.ID)]) -> Response:
    """Reassign to a queue or delegate to an approver, with a reason: the JSON API's
    ``assign``, by this key."""
    reason = _reason(form)
    kind, name = form.get("kind", ""), form.get("name", "").strip()
    if kind not in ("role", "approver") or not name:
        raise HTTPException(422, "choose role or approver and name it")

    def act() -> str:
        body = api.AssignRequest(reason=reason, **{
            "to_role" if kind == "role" else "to_approver": name})
        api.assign(client, request, user.principal, approval_id, body)
        return f"{approval_id} handed to {kind} {name}."

    return _attempt(user, act)


@router.post("/console/inbox/{approval_id}/{decision}", include_in_schema=False)
def decide(request: Request, user: SignedIn, form: CheckedForm, client: Store,
           approval_id: Annotated[str, Path(pattern=api.ID)],
           decision: Literal["approve", "deny"]) -> Response:
    """Approve or deny with a required reason: the JSON API's vote, by this key."""
    reason = _reason(form)

    def act() -> str:
        api.vote(client, request, user.principal, approval_id, decision, reason)
        return f"{'Approved' if decision == 'approve' else 'Denied'} {approval_id}."

    return _attempt(user, act)
