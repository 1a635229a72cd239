"""Sign-in, sessions, CSRF and rendering: what every console page shares.

An API key is exchanged for a server-side session: the cookie holds only a random
session id (HttpOnly, SameSite=Strict, Secure when served over TLS, expiring with the
session); the key stays in this process's memory and is authenticated again on every
request, so a key revoked or expired in the key ring ends its sessions at once, and the
tenant scope and approver roles are exactly the key's. The key is never rendered back.

CSRF: each session (including the anonymous one the sign-in form gets) has its own
random token; every form carries it and every state-changing request without it is a
403. SameSite=Strict already keeps other sites' requests cookie-less; the token is the
second lock (and covers same-site subdomains).

Sessions live in memory: restarting the API signs everybody out, and several API
replicas would each need the same browser to return to them (run one, as for votes).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from agentledger.auth import Principal
from agentledger.queries.common import Scope

COOKIE = "agentledger_console"
SESSION_TTL_S = 8 * 3600.0
"""A session ends after this long (sign in again), or at sign-out, or when its key dies."""
ANON_TTL_S = 3600.0
MAX_FORM_BYTES = 64 * 1024
MAX_SESSIONS = 10_000
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

NAV: list[tuple[str, str]] = [
    ("Inbox", "/console/inbox"),
    ("Runs", "/console/runs"),
    ("Search", "/console/search"),
    ("Permissions", "/console/permissions"),
    ("Control", "/console/control"),
    ("Webhooks", "/console/webhooks"),
]
"""The nav bar, in order. A page without an entry here is still reachable by link."""


class SignInRequired(Exception):
    """No (live) session: the console answers with a redirect to the sign-in page."""


@dataclass
class Session:
    """One browser's session. ``key`` is None before sign-in (the sign-in form's CSRF
    token lives in such an anonymous session)."""

    sid: str
    csrf: str
    expires_at: float
    key: str | None = None
    name: str | None = None
    flash: str | None = None  # one message for the next page shown (then dropped)


@dataclass
class SessionStore:
    """The live sessions, by id (thread-safe: routes run in the thread pool)."""

    sessions: dict[str, Session] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, key: str | None = None, name: str | None = None) -> Session:
        ttl = SESSION_TTL_S if key else ANON_TTL_S
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          time.time() + ttl, key, name)
        with self.lock:
            if len(self.sessions) >= MAX_SESSIONS:
                self._sweep()
            self.sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self.lock:
            session = self.sessions.get(sid)
            if session is not None and session.expires_at <= time.time():
                del self.sessions[sid]
                return None
        return session

    def drop(self, sid: str | None) -> None:
        with self.lock:
            self.sessions.pop(sid or "", None)

    def _sweep(self) -> None:
        now = time.time()
        for sid in [s for s, v in self.sessions.items() if v.expires_at <= now]:
            del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:  # oldest anonymous ones first
            victim = min(self.sessions.values(), key=lambda s: (s.key is not None, s.expires_at))
            del self.sessions[victim.sid]


def store_of(app: FastAPI) -> SessionStore:
    store: SessionStore = app.state.console_sessions
    return store


def set_cookie(request: Request, response: Any, session: Session) -> None:
    """The session cookie: only the random id; Secure when the request came over TLS."""
    response.set_cookie(COOKIE, session.sid, max_age=int(session.expires_at - time.time()),
                        path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(request: Request, response: Any) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def current_session(request: Request) -> Session | None:
    return store_of(request.app).get(request.cookies.get(COOKIE))


@dataclass(frozen=True)
class User:
    """The signed-in key, as every page sees it."""

    principal: Principal
    session: Session

    @property
    def scope(self) -> Scope:
        """The tenants its rows may come from: the API's ``Caller`` for this key."""
        return Scope(self.principal.tenants)

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def csrf(self) -> str:
        return self.session.csrf


def signed_in(request: Request) -> User:
    """The session's key, authenticated again now; no live session → sign-in redirect."""
    session = current_session(request)
    if session is None or session.key is None:
        raise SignInRequired()
    principal: Principal | None = request.app.state.keys.authenticate(session.key)
    if principal is None:  # revoked or expired since sign-in
        store_of(request.app).drop(session.sid)
        raise SignInRequired()
    user = User(principal, session)
    request.state.console_user = user
    return user


async def checked_form(request: Request) -> dict[str, str]:
    """The urlencoded POST body, after checking its ``csrf`` field against the session's
    token: missing or wrong → 403. Works for the anonymous sign-in session too."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    form = {k: v[0] for k, v in parsed.items()}
    session = current_session(request)
    token = form.pop("csrf", "")
    if session is None or not token or not hmac.compare_digest(token, session.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
    return form


SignedIn = Annotated[User, Depends(signed_in)]
CheckedForm = Annotated[dict[str, str], Depends(checked_form)]


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/console/signin?next={quote(target, safe='')}"


def flash(user: User, message: str) -> None:
    """Show ``message`` on the next page this session renders (after a redirect)."""
    user.session.flash = message


def render(request: Request, template: str, status_code: int = 200,
           **ctx: Any) -> HTMLResponse:
    """The page ``template`` with ``ctx``, the nav, the signed-in user (if any) and
    ``csrf_field()`` for forms (the token of ``session=``, else of the request's
    session). Jinja2 autoescapes every value."""
    user: User | None = ctx.pop("user", None) or getattr(request.state, "console_user", None)
    session: Session | None = ctx.pop("session", None) or (
        user.session if user else current_session(request))
    token = session.csrf if session else ""

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="csrf" value="{}">').format(token)

    flash = session.flash if session else None
    if session is not None:
        session.flash = None
    context = {"user": user, "nav": NAV, "path": request.url.path, "csrf": token,
               "csrf_field": csrf_field, "flash": flash, **ctx}
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'")
    response.headers["Referrer-Policy"] = "same-origin"
    return response
