"""Runs: recent runs, and one run's page by run id or trace id (a shareable URL).

The page reads :func:`agentledger.queries.timeline.timeline` and
:func:`agentledger.queries.replay.verify` — what ``GET /v1/timeline/{ref}`` and
``GET /v1/verify/{ref}`` answer — and offers the replay bundle
(``/v1/replay/{ref}``'s stream) as a download through the session. Another tenant's run
is a 404 page, like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from agentledger.api.deps import Store
from agentledger.api.events import agent_keys
from agentledger.api.params import RunRef
from agentledger.console.session import SignedIn, render
from agentledger.queries import events, replay, timeline

router = APIRouter()
RECENT = 50


@router.get("/console/runs", response_class=HTMLResponse, include_in_schema=False)
def runs(request: Request, user: SignedIn, client: Store,
         ref: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """Recent runs (their ``run.finished`` events), and a box to open one by id."""
    if ref and ref.strip():
        return RedirectResponse(f"/console/runs/{ref.strip()}", status_code=303)
    recent = events.search(client, user.scope, events.SearchFilters(event_type="run.finished"),
                           limit=RECENT)
    return render(request, "runs.html", user=user, recent=recent["events"])


def _verdict(checked: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """``ok`` when every run verifies, else ``broken``; the per-run results."""
    found: list[dict[str, Any]] = checked.get("runs", [])
    return ("ok" if found and checked.get("ok") else "broken"), found


@router.get("/console/runs/{ref}", response_class=HTMLResponse, include_in_schema=False)
def run_page(request: Request, user: SignedIn, client: Store, ref: RunRef) -> Response:
    story = timeline.timeline(client, user.scope, ref)  # NotFound (also foreign) → 404
    # the badge is the chain's verdict, signatures included, as GET /v1/verify/{ref}
    # gives it; the inclusion proof (reading the whole log) is in the replay bundle
    verdict, checked = _verdict(replay.verify(client, user.scope, ref, agent_keys(),
                                              inclusion=False))
    return render(request, "run.html", user=user, ref=ref, story=story, verdict=verdict,
                  checked=checked)


@router.get("/console/runs/{ref}/replay.json", include_in_schema=False)
def replay_download(user: SignedIn, client: Store, ref: RunRef) -> StreamingResponse:
    """The replay bundle, as ``GET /v1/replay/{ref}`` streams it, saved as a file."""
    replay.run_ids(client, user.scope, ref)  # a missing or foreign run: 404 before a byte
    return StreamingResponse(
        replay.replay_stream(client, user.scope, ref), media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="replay-{ref}.json"'})
