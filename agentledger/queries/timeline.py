"""A run as a story: inputs → retrieval → model calls → tool calls → policy and approvals
→ outcome, each step with its offset from the start, latency and cost."""

from __future__ import annotations

from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import Scope
from agentledger.queries.events import StoredEvent, run_events

PHASES: Final = {
    "run.started": "input",
    "retrieval": "retrieval",
    "model.call": "model",
    "tool.call": "tool",
    "tool.result": "tool",
    "policy.decision": "policy",
    "approval.requested": "approval",
    "approval.resolved": "approval",
    "human.override": "intervention",
    "rollback": "intervention",
    "run.finished": "outcome",
}


def describe(event_type: str, body: dict[str, Any]) -> str:
    """One line a person reads in a timeline."""
    b = body
    match event_type:
        case "run.started":
            return (f"{b['workflow']} started (prompt {b['prompt_template']}@"
                    f"{b['prompt_version']}, policy {b['policy_version']}, "
                    f"inputs {b['inputs_hash'][:12]})")
        case "retrieval":
            return f"retrieved {len(b['doc_ids'])} docs from {b['source']}@{b['index_version']}"
        case "model.call":
            return (f"{b['role']}: {b['provider']}/{b['model']} {b['tokens_in']}→"
                    f"{b['tokens_out']} tokens, {b['status']}")
        case "tool.call":
            return f"call {b['tool']}.{b['action']} ({b['mode']}, v{b['tool_version']})"
        case "tool.result":
            error = f" {b['error_type']}" if b.get("error_type") else ""
            return f"{b['tool']} → {b['status']}{error}"
        case "policy.decision":
            return f"policy {b['policy_id']}@{b['policy_version']}: {b['decision']} ({b['rule']})"
        case "approval.requested":
            return f"approval requested from {b['approver']}: {b['action']}"
        case "approval.resolved":
            return f"{b['approver']} {b['decision']}"
        case "human.override" | "rollback":
            return f"{event_type} by {b['who']}: {b['what']} ({b['why']})"
        case "run.finished":
            error = f": {b['error']}" if b.get("error") else ""
            return f"finished {b['outcome']}{error}"
    return event_type


def run_timeline(events: list[StoredEvent]) -> dict[str, Any]:
    """The timeline of one run's stored events (already in seq order)."""
    parsed = [e.event for e in events]
    start = parsed[0]["ts"]
    first = events[0].columns
    started = next((p for p in parsed if p["event_type"] == "run.started"), None)
    finished = next((p for p in parsed if p["event_type"] == "run.finished"), None)
    t0 = events[0].columns["ts"]
    steps = []
    for stored, event in zip(events, parsed, strict=True):
        body = event["body"]
        steps.append({
            "seq": event["seq"],
            "ts": event["ts"],
            "offset_ms": round((stored.columns["ts"] - t0).total_seconds() * 1000, 3),
            "phase": PHASES.get(event["event_type"], "other"),
            "event_type": event["event_type"],
            "event_id": event["event_id"],
            "span_id": event["span_id"],
            "parent_span_id": event.get("parent_span_id"),
            "what": describe(event["event_type"], body),
            "status": body.get("status") or body.get("decision") or body.get("outcome"),
            "latency_ms": body.get("latency_ms"),
            "cost_usd": body.get("cost_usd"),
            "body": body,
        })
    totals = finished["body"].get("totals", {}) if finished else {}
    return {
        "run_id": first["run_id"],
        "trace_id": first["trace_id"],
        "tenant": first["tenant"],
        "agent": first["agent"],
        "agent_version": first["agent_version"],
        "workflow": started["body"]["workflow"] if started else None,
        "started_at": start,
        "outcome": finished["body"]["outcome"] if finished else None,
        "complete": finished is not None,
        "cost_usd": totals.get("cost_usd", sum(s["cost_usd"] or 0 for s in steps)),
        "duration_ms": round((events[-1].columns["ts"] - t0).total_seconds() * 1000, 3),
        "tool_calls": sum(1 for s in steps if s["event_type"] == "tool.call"),
        "model_calls": sum(1 for s in steps if s["event_type"] == "model.call"),
        "steps": steps,
    }


def timeline(client: Client, scope: Scope, ref: str) -> dict[str, Any]:
    """Timelines of the run ``ref`` or of every run of the trace ``ref``."""
    by_run = run_events(client, scope, ref)
    runs = sorted((run_timeline(events) for events in by_run.values()),
                  key=lambda r: r["started_at"])
    return {"ref": ref, "runs": runs}
