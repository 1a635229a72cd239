"""The web console: server-rendered pages for the people who answer for the agents.

Mounted by the ledger API (:func:`agentledger.api.app.create_app` calls
:func:`agentledger.console.app.install`) under ``/console``. Pages are rendered on the
server with Jinja2 from ``templates/``; the one stylesheet is ``static/console.css``
(no CDN, no JavaScript framework: it works offline). Every page reads through the same
query functions (:mod:`agentledger.queries`) and the same tenant scope as the JSON API.

How to add a page (one module + one template per page)
------------------------------------------------------
1. ``agentledger/console/<page>.py``::

       from fastapi import APIRouter, Request
       from fastapi.responses import HTMLResponse, RedirectResponse
       from agentledger.api.deps import Store
       from agentledger.console.session import CheckedForm, SignedIn, render

       router = APIRouter()

       @router.get("/console/things", response_class=HTMLResponse)
       def things(request: Request, user: SignedIn, client: Store) -> HTMLResponse:
           rows = some_query(client, user.scope)       # the JSON API's query function
           return render(request, "things.html", user=user, rows=rows)

       @router.post("/console/things/{id}/do")
       def do(request: Request, user: SignedIn, form: CheckedForm, id: str) -> RedirectResponse:
           reason = form.get("reason", "")            # CSRF already checked (else 403)
           ...
           return RedirectResponse(f"/console/things", status_code=303)

   ``SignedIn`` is the signed-in key's principal (redirects to sign-in without a
   session); ``user.scope`` is its tenant scope, ``user.principal`` the key's
   :class:`agentledger.auth.Principal` (roles, agents), exactly as the API's ``Who``.
   ``CheckedForm`` parses an urlencoded POST body and answers 403 unless it carries the
   session's CSRF token. Raise ``HTTPException``/``NotFound`` as in the API: the console
   renders them as pages (another tenant's id is a 404, never a stack).
2. ``agentledger/console/templates/<page>.html``: ``{% extends "base.html" %}``, fill
   ``{% block title %}`` and ``{% block content %}``; every form includes
   ``{{ csrf_field() }}``.
3. Add the module to ``PAGES`` in :mod:`agentledger.console.app`, its nav entry to
   ``NAV`` there (if it has one) and its path to ``tests/console/pages.py`` (the
   accessibility and screenshot tests visit every page listed there).
"""
