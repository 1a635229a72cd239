"""Search: the filters of ``GET /v1/events`` as a form, with cursor paging.

Everything is in the query string (``/console/search?agent=…&status=error&cursor=…``),
so a search is a link to share. It calls :func:`agentledger.queries.events.search` with
the key's scope, exactly as the JSON route does; a bad value is a 400 page naming it.
"""

from __future__ import annotations

import re
from typing import Annotated, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from agentledger.api.deps import Store
from agentledger.api.params import Outcome, Status, time_param
from agentledger.console.session import SignedIn, render
from agentledger.queries import events
from agentledger.queries.common import QueryError
from agentledger.schemas.events import EVENT_TYPES

router = APIRouter()
NAMES = ("tenant", "agent", "tool", "run_id", "workflow")
CHOICES = {"event_type": tuple(EVENT_TYPES), "status": get_args(Status),
           "outcome": get_args(Outcome)}
PAGE = 50
MAX_PAGE = 200
Text = Annotated[str, Query(max_length=256)]


def _choice(name: str, value: str) -> str | None:
    if not value:
        return None
    if value not in CHOICES[name]:
        raise QueryError(f"{name}: {value!r} is not one of {', '.join(CHOICES[name])}")
    return value


def _name(name: str, value: str) -> str | None:
    if value and len(value) > 128:
        raise QueryError(f"{name}: at most 128 characters")
    return value or None


@router.get("/console/search", response_class=HTMLResponse, include_in_schema=False)
def search(request: Request, user: SignedIn, client: Store,
           tenant: Text = "", agent: Text = "", tool: Text = "", run_id: Text = "",
           workflow: Text = "", event_type: Text = "", status: Text = "", outcome: Text = "",
           trace_id: Text = "", q: Text = "", since: Text = "24h", until: Text = "",
           cursor: Annotated[str, Query(max_length=512)] = "",
           limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE) -> Response:
    form = {"tenant": tenant, "agent": agent, "tool": tool, "run_id": run_id,
            "workflow": workflow, "event_type": event_type, "status": status,
            "outcome": outcome, "trace_id": trace_id, "q": q, "since": since, "until": until}
    if trace_id and not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        raise QueryError("trace_id: 32 lowercase hex characters")
    filters = events.SearchFilters(
        **{n: _name(n, form[n]) for n in NAMES},
        **{n: _choice(n, form[n]) for n in CHOICES},
        trace_id=trace_id or None, text=q or None,
        since=time_param(since or None, "since"), until=time_param(until or None, "until"))
    page = events.search(client, user.scope, filters, limit=limit, cursor=cursor or None)
    kept: dict[str, str | int] = {k: v for k, v in form.items() if v}
    if limit != PAGE:
        kept["limit"] = limit
    next_url = (f"/console/search?{urlencode({**kept, 'cursor': page['next_cursor']})}"
                if page["next_cursor"] else None)
    return render(request, "search.html", user=user, form=form, choices=CHOICES,
                  found=page["events"], next_url=next_url, paged=bool(cursor),
                  first_url=f"/console/search?{urlencode(kept)}")
