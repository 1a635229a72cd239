"""Requests already pending when the sender starts, read through the ledger API.

The sender's consumer group resumes ``agent.events`` after its last commit, so requests
made before that commit are not read again, and their SLA clocks (kept in memory) would
be lost with a restart. At start the sender therefore asks the ledger API
(``GET /v1/approvals``, this machine's operator key or ``AGENTLEDGER_API_KEY``) for the
requests still pending, as ``approval.requested``-shaped events, and takes them like
new ones: the delivery log keeps a notice already sent from being sent again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)


def pending_requests(api_url: str, key: str, *, since: str = "7d",
                     timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The pending requests the key sees, newest 1000, each shaped as the
    ``approval.requested`` event that made it. Raises httpx.HTTPError if the API does not
    answer."""
    answer = httpx.get(f"{api_url.rstrip('/')}/v1/approvals", timeout=timeout_s,
                       params={"status": "pending", "since": since, "limit": 1000},
                       headers={"Authorization": f"Bearer {key}"})
    answer.raise_for_status()
    out = []
    for row in answer.json().get("approvals", []):
        requested = row.get("requested_at")
        if isinstance(requested, str):
            requested = datetime.fromisoformat(requested.replace("Z", "+00:00")).isoformat()
        out.append({"event_type": "approval.requested", "tenant": row["tenant"],
                    "agent": row["agent"], "run_id": row["run_id"], "ts": requested,
                    "body": {"approval_id": row["approval_id"], "approver": row["queue"],
                             "action": row.get("action") or "",
                             "reason": row.get("reason") or "",
                             "approvals_required": row.get("approvals_required") or 1,
                             "sla_s": row.get("sla_s"),
                             "expires_in_s": row.get("expires_in_s"),
                             "args": row.get("args") or {}}})
    return out
