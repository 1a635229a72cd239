"""``agentledger approvals``: the human side of tool gating.

Every command talks to the ledger API with ``AGENTLEDGER_API_KEY`` (or this machine's
operator key): an approver uses their own key, which must cover the tenant and hold the
queue's role; dual control means a second, different key approves too.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, out, print_json, table

approvals_app = typer.Typer(
    help="The approval queue: requests escalated by the tool-gating policy.",
    no_args_is_help=True)

Reason = Annotated[str, typer.Option(help="why (kept with the vote, required)")]



def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else ""


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(
        help="pending, approved, rejected or expired")] = "pending",
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    queue: Annotated[str | None, typer.Option(help="only this approver queue")] = None,
    since: Annotated[str, typer.Option(help="requested since: 7d, 24h, ISO date")] = "7d",
    all_: Annotated[bool, typer.Option("--all", help="every status")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Approval requests (pending by default), newest first, with votes and SLA state."""
    if status not in (None, "pending", "approved", "rejected", "expired"):
        raise UserError(f"--status must be pending, approved, rejected or expired, "
                            f"not {status!r}")
    with connect.ledger() as ledger:
        found = ledger.get("/v1/approvals", status=None if all_ else status, tenant=tenant,
                           queue=queue, since=since)["approvals"]
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("no approval requests", highlight=False)
        return
    shown = [{"approval id": a["approval_id"], "tenant": a["tenant"], "agent": a["agent"],
              "action": a["action"], "args": str(a["args"] or "")[:40],
              "queue": a["queue"], "votes": f"{len(a['approved_by'])}/"
              f"{a['approvals_required']}", "status": a["status"],
              "requested": _when(a["requested_at"]),
              "SLA": "breached" if a["sla_breached"] else "ok"} for a in found]
    table(shown, list(shown[0]), title="approvals")


def _vote(approval_id: str, decision: str, reason: str, as_json: bool) -> None:
    if not reason.strip():
        raise UserError("--reason is required: say why, it is kept with the vote")
    with connect.ledger() as ledger:
        done = ledger.post(f"/v1/approvals/{approval_id}/{decision}", {"reason": reason})
    if as_json:
        print_json(done)
        return
    out.print(f"approval {approval_id}: {decision} recorded; status {done['status']} "
                  f"({len(done['approved_by'])}/{done['approvals_required']} approvals)",
                  highlight=False)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="the approval id (see `approvals list`)")],
    reason: Reason,
    as_json: JsonFlag = False,
) -> None:
    """Approve a request with your key; the agent goes ahead once enough distinct
    approvers have approved."""
    _vote(approval_id, "approve", reason, as_json)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[str, typer.Argument(help="the approval id (see `approvals list`)")],
    reason: Reason,
    as_json: JsonFlag = False,
) -> None:
    """Deny a request: one denial rejects it and the agent's call is refused."""
    _vote(approval_id, "deny", reason, as_json)


@approvals_app.command("stats")
def approvals_stats(
    by: Annotated[str, typer.Option(help="tenant, agent or tool")] = "tenant",
    since: Annotated[str, typer.Option(help="7d, 24h, 30m (ago), or an ISO date")] = "7d",
    until: Annotated[str | None, typer.Option(help="to (exclusive)")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Tool gating from real decisions: policy-block rate, escalation rate, approval
    latency p50/p95, SLA breaches and override rate (approved / escalated)."""
    with connect.ledger() as ledger:
        found = ledger.get("/v1/approvals/stats", by=by, since=since, until=until,
                           tenant=tenant)
    if as_json:
        print_json(found)
        return
    if not found["groups"]:
        out.print("no gated tool calls in that range", highlight=False)
        return

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.1%}"

    def secs(v: float | None) -> str:
        return "" if v is None else f"{v / 1000:,.1f}s"

    shown = [{by: g["key"], "calls": g["tool_calls"], "blocked": g["blocks"],
              "block %": pct(g["block_rate"]), "escalated": g["escalations"],
              "escalation %": pct(g["escalation_rate"]), "approved": g["approved"],
              "override %": pct(g["override_rate"]), "p50": secs(g["approval_p50_ms"]),
              "p95": secs(g["approval_p95_ms"]), "SLA breaches": g["sla_breaches"],
              "control refusals": g["control_refusals"]} for g in found["groups"]]
    table(shown, list(shown[0]), title=f"tool gating by {by}")
