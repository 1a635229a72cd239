"""Permissions: what each agent may do, from the loaded Cedar policy and catalog.

The same answer as ``GET /v1/permissions`` (:func:`agentledger.api.permissions.
permissions_view`, the key's tenant scope): per agent, every tool action with its bands
("201 ≤ amount ≤ 800: 2 x finance (refund-over-threshold)"), the rule that decides each,
who holds each approver role, and the policy version with its diff from the previous one.
Each band carries its answers as data attributes, so a browser test can hold the page
to the policy's own cases.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from agentledger.api.permissions import permissions_view
from agentledger.console.session import SignedIn, render
from agentledger.queries.permissions import outcome_text

router = APIRouter()


def _badge(decision: str) -> str:
    return {"allow": "ok", "deny": "bad", "escalate": "warn"}.get(decision, "")


def _rows(found: dict[str, Any], agent: str) -> list[dict[str, Any]]:
    shown = []
    for row in found["agents"]:
        if agent and row["agent"] != agent:
            continue
        cells = []
        for cell in row["cells"]:
            bands = [{"when": b["when"] or "always", "text": outcome_text(b["outcome"]),
                      "after": outcome_text(b["after_approvals"])
                      if b.get("after_approvals") else "",
                      "decision": b["outcome"]["decision"],
                      "data": {k: json.dumps(b.get(k), sort_keys=True) for k in (
                          "match", "outcome", "after_approvals", "without_idempotency_key",
                          "other_tenant")}} for b in cell["bands"]]
            cells.append({**cell, "uid": f"{cell['tool']}:{cell['action']}",
                          "badge": _badge(cell["decision"]), "shown_bands": bands})
        shown.append({**row, "cells": cells})
    return shown


@router.get("/console/permissions", response_class=HTMLResponse, include_in_schema=False)
async def permissions(request: Request, user: SignedIn,
                      tenant: Annotated[str, Query(max_length=128)] = "",
                      agent: Annotated[str, Query(max_length=128)] = "") -> Response:
    found = await run_in_threadpool(permissions_view, request, user.scope, tenant or None)
    return render(request, "permissions.html", user=user, found=found,
                  agents=_rows(found, agent), agent=agent, badge=_badge)
