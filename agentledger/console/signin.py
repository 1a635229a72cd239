"""Sign-in and sign-out: an API key in, a session cookie out (see :mod:`.session`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agentledger.console.session import (
    CheckedForm,
    SignedIn,
    clear_cookie,
    current_session,
    render,
    set_cookie,
    store_of,
)

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if target and target.startswith("/console") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return "/console/inbox"


@router.get("/console", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/console/inbox", status_code=303)


@router.get("/console/signin", response_class=HTMLResponse, include_in_schema=False)
def sign_in_page(request: Request,
                 next: Annotated[str | None, Query(max_length=2048)] = None) -> Response:
    """The form; an anonymous session carries its CSRF token."""
    session = current_session(request) or store_of(request.app).new()
    response = render(request, "signin.html", session=session, next=_safe_next(next),
                      error=None)
    set_cookie(request, response, session)
    return response


@router.post("/console/signin", include_in_schema=False)
def sign_in(request: Request, form: CheckedForm) -> Response:
    """A known key → a new session (a new id: the anonymous one is dropped, so an id
    planted before sign-in never becomes a signed-in one) and a redirect. The key is
    never rendered back, not even on a failed attempt."""
    key = form.get("key", "").strip()
    principal = request.app.state.keys.authenticate(key) if key else None
    sessions = store_of(request.app)
    old = current_session(request)
    if principal is None:
        return render(request, "signin.html", status_code=401, session=old,
                      next=_safe_next(form.get("next")),
                      error="That key is not known, has expired or was revoked.")
    sessions.drop(old.sid if old else None)
    session = sessions.new(key, principal.name)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    set_cookie(request, response, session)
    return response


@router.post("/console/signout", include_in_schema=False)
def sign_out(request: Request, user: SignedIn, form: CheckedForm) -> Response:
    store_of(request.app).drop(user.session.sid)
    response = RedirectResponse("/console/signin", status_code=303)
    clear_cookie(request, response)
    return response
