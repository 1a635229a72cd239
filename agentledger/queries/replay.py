"""Replay bundles and chain verification (``schemas/integrity.py``) of stored runs.

Both read ``raw``, the exact JSON that crossed Kafka, because that is what the hash chain
covers. Verification also re-derives the indexed columns from ``raw`` (the sink's own
mapping), so a column edited in place — a cost, a status — is caught even though the
chain over ``raw`` still holds; and it compares the run's events with the per-run
summary written at ingest, which remembers the last seq even after a trailing event is
deleted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import orjson
from clickhouse_connect.driver.client import Client

from agentledger import __version__
from agentledger.queries.common import Scope, Where, rows
from agentledger.queries.events import StoredEvent, run_events
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.schemas.integrity import verify_chain

BUNDLE_VERSION: Final = 1
# Columns the verifier re-derives from raw; kafka coordinates say where, not what.
CHECKED_COLUMNS: Final = tuple(c for c in EVENT_COLUMNS
                               if c not in ("raw", "kafka_partition", "kafka_offset"))


def _normal(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value


def column_drift(stored: StoredEvent, event: dict[str, Any]) -> str | None:
    """The first indexed column that does not match what ``raw`` says, or None."""
    derived = dict(zip(EVENT_COLUMNS, event_row(event, stored.raw, 0, 0), strict=True))
    for column in CHECKED_COLUMNS:
        if column in stored.columns and _normal(stored.columns[column]) != _normal(
                derived[column]):
            return column
    return None


def verify_run(events: list[StoredEvent], last_seq_ingested: int | None) -> dict[str, Any]:
    """Chain, columns and completeness of one run; names the first broken link."""
    run_id = events[0].columns["run_id"]
    parsed = []
    for stored in events:
        try:
            parsed.append(orjson.loads(stored.raw))
        except orjson.JSONDecodeError:
            return _broken(run_id, len(events), stored, "raw is not valid JSON")
    chain = verify_chain(parsed)
    result = {"run_id": run_id, **chain.to_dict(), "custody": custody(parsed[0])}
    if not chain.ok:
        return result
    for stored, event in zip(events, parsed, strict=True):
        try:
            drift = column_drift(stored, event)
        except (KeyError, TypeError, ValueError):
            drift = "body"
        if drift:
            return _broken(run_id, len(events), stored,
                           f"column {drift} differs from the event's stored JSON")
    last = parsed[-1]
    if last_seq_ingested is not None and last_seq_ingested > last["seq"]:
        return {**result, "ok": False, "broken_seq": last["seq"] + 1, "broken_event_id": None,
                "problem": f"events after seq {last['seq']} are missing: seq "
                           f"{last_seq_ingested} was ingested"}
    result["complete"] = last["event_type"] == "run.finished"
    return result


def custody(first: dict[str, Any]) -> str:
    """Where the chain of custody begins: who computed this run's hash chain."""
    origin = first.get("origin")
    if origin in (None, "sdk"):
        return "sdk: chained by the agent's SDK as it emitted each event"
    return (f"{origin}: chained by the ledger's OTLP intake when the spans arrived; what the "
            "agent did before exporting them is outside the chain")


def _broken(run_id: str, count: int, stored: StoredEvent, problem: str) -> dict[str, Any]:
    return {"run_id": run_id, "ok": False, "events": count,
            "broken_seq": stored.columns.get("seq"),
            "broken_event_id": stored.columns.get("event_id"), "problem": problem}


def _last_seqs(client: Client, scope: Scope, run_ids: list[str]) -> dict[str, int]:
    where = Where().scope(scope).add("run_id IN {runs:Array(String)}", runs=run_ids)
    found = rows(client, "SELECT run_id, max(last_seq) AS last_seq FROM run_summaries "
                         f"WHERE {where.sql()} GROUP BY run_id", where.params)
    return {r["run_id"]: r["last_seq"] for r in found}


def verify(client: Client, scope: Scope, ref: str) -> dict[str, Any]:
    """Verify every run of ``ref`` (a run id or a trace id)."""
    by_run = run_events(client, scope, ref, columns=CHECKED_COLUMNS)
    last_seqs = _last_seqs(client, scope, list(by_run))
    runs = [verify_run(events, last_seqs.get(run_id)) for run_id, events in by_run.items()]
    return {"ref": ref, "ok": all(r["ok"] for r in runs), "runs": runs}


def _bundle(events: list[StoredEvent], verification: dict[str, Any]) -> dict[str, Any]:
    parsed = [e.event for e in events]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in parsed:
        by_type.setdefault(event["event_type"], []).append(event)

    def steps(event_type: str, *fields: str) -> list[dict[str, Any]]:
        return [{"seq": e["seq"], "event_id": e["event_id"],
                 **{f: e["body"].get(f) for f in fields}}
                for e in by_type.get(event_type, [])]

    started = next(iter(by_type.get("run.started") or []), None)
    finished = next(iter(by_type.get("run.finished") or []), None)
    first = parsed[0]
    inputs = None
    if started:
        b = started["body"]
        inputs = {"workflow": b["workflow"], "inputs_hash": b["inputs_hash"],
                  "input_ref": b.get("input_ref"), "prompt_template": b["prompt_template"],
                  "prompt_version": b["prompt_version"], "model_config": b.get("model_config"),
                  "policy_version": b["policy_version"], "budget": b.get("budget")}
    return {
        "run_id": first["run_id"],
        "trace_id": first["trace_id"],
        "tenant": first["tenant"],
        "workspace": first["workspace"],
        "agent": first["agent"],
        "agent_version": first["agent_version"],
        "principal": first["principal"],
        "on_behalf_of": first.get("on_behalf_of"),
        "env": first["env"],
        "inputs": inputs,
        "retrievals": steps("retrieval", "source", "index_version", "doc_ids", "doc_hashes"),
        "models": steps("model.call", "provider", "model", "model_version", "role",
                        "price_version", "tokens_in", "tokens_out", "cost_usd", "status"),
        "tools": [
            {**call, **{k: v for k, v in (result or {}).items() if k not in call}}
            for call, result in _pair_tools(by_type)
        ],
        "policy_decisions": steps("policy.decision", "policy_id", "policy_version", "rule",
                                  "decision", "action"),
        "approvals": [
            {"seq": e["seq"], "event_id": e["event_id"], "event_type": e["event_type"],
             **e["body"]}
            for e in parsed if e["event_type"].startswith("approval.")
        ],
        "interventions": [
            {"seq": e["seq"], "event_id": e["event_id"], "event_type": e["event_type"],
             **e["body"]}
            for e in parsed if e["event_type"] in ("human.override", "rollback")
        ],
        "outcome": finished["body"] if finished else None,
        "events": parsed,
        "verification": verification,
    }


def _pair_tools(
        by_type: dict[str, list[dict[str, Any]]],
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each tool call with its result (same span), in call order."""
    results = {e["span_id"]: e for e in by_type.get("tool.result", [])}
    paired = []
    for call in by_type.get("tool.call", []):
        b = call["body"]
        result = results.get(call["span_id"])
        paired.append((
            {"seq": call["seq"], "event_id": call["event_id"], "tool": b["tool"],
             "action": b["action"], "mode": b["mode"], "tool_version": b["tool_version"],
             "schema_hash": b["schema_hash"], "args": b["args"], "args_hash": b["args_hash"],
             "idempotency_key": b.get("idempotency_key")},
            None if result is None else {
                "result_seq": result["seq"], "status": result["body"]["status"],
                "error_type": result["body"].get("error_type"),
                "latency_ms": result["body"]["latency_ms"],
                "side_effect": result["body"].get("side_effect"),
                "verified": result["body"].get("verified")},
        ))
    return paired


def replay_bundle(client: Client, scope: Scope, ref: str) -> dict[str, Any]:
    """Everything needed to reproduce the run(s) of ``ref`` without guessing."""
    by_run = run_events(client, scope, ref, columns=CHECKED_COLUMNS)
    last_seqs = _last_seqs(client, scope, list(by_run))
    runs = [_bundle(events, verify_run(events, last_seqs.get(run_id)))
            for run_id, events in by_run.items()]
    return {
        "bundle_version": BUNDLE_VERSION,
        "generated_by": f"agentledger {__version__}",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "ref": ref,
        "verified": all(r["verification"]["ok"] for r in runs),
        "runs": runs,
    }
