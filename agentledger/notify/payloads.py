"""What a webhook receives, and how it can tell the ledger sent it.

A :class:`Notice` is one thing that happened (a new approval request, an SLA about to run
out or run out, a breaker opening, an agent entering safe mode). It is sent as generic JSON
(every field) or as a Slack-compatible message (``text`` plus Block Kit ``blocks``, what a
Slack incoming webhook accepts).

Signature (the Stripe/Slack scheme): ``X-AgentLedger-Signature: t=<unix seconds>,v1=<hex>``
where hex is HMAC-SHA256 of ``"<t>." + body`` under the webhook's secret. The timestamp is
inside the signed bytes, so a receiver that refuses old timestamps (:func:`verify`,
``tolerance_s``) refuses replays; every attempt is signed afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

SIGNATURE_HEADER: Final = "X-AgentLedger-Signature"
EVENT_HEADER: Final = "X-AgentLedger-Event"
DELIVERY_HEADER: Final = "X-AgentLedger-Delivery"


@dataclass(frozen=True)
class Notice:
    """One thing to tell people about. ``subject`` identifies it (an approval id, a
    control key with its version): with the kind and the webhook it makes the delivery
    id, so the same notice is never delivered twice to one webhook."""

    kind: str
    tenant: str
    subject: str
    title: str
    text: str
    queue: str = ""
    link: str | None = None
    ts: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    def delivery_id(self, webhook: str) -> str:
        raw = "\0".join((webhook, self.kind, self.tenant, self.subject)).encode()
        return hashlib.sha256(raw).hexdigest()[:32]


def generic(notice: Notice, delivery_id: str) -> dict[str, Any]:
    return {"type": notice.kind, "delivery_id": delivery_id, "tenant": notice.tenant,
            "queue": notice.queue or None, "subject": notice.subject, "title": notice.title,
            "text": notice.text, "link": notice.link, "ts": notice.ts, "data": notice.data}


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped (its formatting rules)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(notice: Notice, delivery_id: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification's fallback) and
    blocks (title, details, a link to the console, the context line)."""
    body = f"*{_mrkdwn(notice.title)}*\n{_mrkdwn(notice.text)}"
    if notice.link:
        body += f"\n<{notice.link}|Open in the agentledger console>"
    context = f"{notice.kind} · tenant {notice.tenant}"
    if notice.queue:
        context += f" · queue {notice.queue}"
    return {"text": f"{notice.title}: {notice.text}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}},
                       {"type": "context", "elements": [
                           {"type": "mrkdwn", "text": _mrkdwn(
                               f"{context} · {notice.subject} · delivery {delivery_id}")}]}]}


def body_of(notice: Notice, delivery_id: str, fmt: str) -> bytes:
    return orjson.dumps(slack(notice, delivery_id) if fmt == "slack"
                        else generic(notice, delivery_id))


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for ``body`` at ``timestamp`` (now)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """A receiver's check: a ``v1`` signature of this body matches, and its timestamp is
    within ``tolerance_s`` of now (docs/notifications.md has the same recipe)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
