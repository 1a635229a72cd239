"""One delivery: sign, POST, record the attempt, retry with exponential backoff.

A 2xx answer delivers. A 4xx other than 408 (timeout) and 429 (slow down) fails at once:
the receiver refused this body and would refuse it again. Anything else (5xx, a timeout,
a refused connection) is retried after ``backoff_s``, doubled per attempt (capped at
``max_backoff_s``, with up to 20 % jitter so a fleet of senders does not retry in step),
until ``max_attempts``. The record is published after every attempt, so the console shows
a delivery being retried while it is.

Delivery semantics: at least once while the sender runs (a receiver that answered 2xx
after its timeout gets the body again: receivers dedupe on ``X-AgentLedger-Delivery``);
a delivery still retrying when the sender stops is not resumed (its record stays
``retrying``). Retries are a plain loop rather than ``tenacity``: every attempt is
recorded and published, and the wait must end at once on shutdown; the loop says both
in ten lines.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx

from agentledger.notify.config import Webhook, WebhooksConfig
from agentledger.notify.deliveries import Attempt, DeliveryRecord
from agentledger.notify.payloads import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Notice,
    body_of,
    sign,
)


def _final_refusal(code: int) -> bool:
    return 400 <= code < 500 and code not in (408, 429)


def deliver(client: httpx.Client, hook: Webhook, notice: Notice, config: WebhooksConfig,
            publish: Callable[[DeliveryRecord], None], stop: threading.Event) -> DeliveryRecord:
    """Send ``notice`` to ``hook`` until delivered, refused, out of attempts or stopped;
    ``publish`` gets the record after every change. The final record."""
    delivery_id = notice.delivery_id(hook.name)
    record = DeliveryRecord(delivery_id=delivery_id, webhook=hook.name, format=hook.format,
                            kind=notice.kind, tenant=notice.tenant, queue=notice.queue,
                            subject=notice.subject, title=notice.title)
    body = body_of(notice, delivery_id, hook.format)
    for n in range(1, config.max_attempts + 1):
        started = time.monotonic()
        code: int | None = None
        error = ""
        try:
            headers = {"Content-Type": "application/json", EVENT_HEADER: notice.kind,
                       DELIVERY_HEADER: delivery_id,
                       SIGNATURE_HEADER: sign(hook.signing_secret(), body),
                       "User-Agent": "agentledger-webhooks/1"}
            answer = client.post(hook.url, content=body, headers=headers,
                                 timeout=hook.timeout_s)
            code = answer.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}: {answer.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except ValueError as exc:  # the secret's variable is unset
            error = str(exc)[:300]
        attempt = Attempt(n=n, ts=time.time(), status_code=code, error=error,
                          duration_ms=round((time.monotonic() - started) * 1000, 1))
        delivered = code is not None and 200 <= code < 300
        last = n == config.max_attempts or (code is not None and _final_refusal(code))
        wait = min(config.max_backoff_s, config.backoff_s * 2 ** (n - 1))
        wait *= 1 + random.random() * 0.2  # jitter, not a secret
        status = "delivered" if delivered else "failed" if last else "retrying"
        record = record.model_copy(update={
            "attempts": [*record.attempts, attempt], "status": status,
            "version": record.version + 1,
            "next_attempt_at": None if status != "retrying" else time.time() + wait})
        publish(record)
        if status != "retrying" or stop.wait(wait):
            return record
    return record
