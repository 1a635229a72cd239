"""Replay bundles and chain verification (``schemas/integrity.py``) of stored runs.

Both read ``raw``, the exact JSON that crossed Kafka, which the hash chain covers.
Verification also re-derives the indexed columns from ``raw`` (the sink's own mapping),
so a column edited in place (a cost, a status) is caught though the chain over ``raw``
holds; and it compares the run's events with the per-run summary written at ingest,
which remembers the last seq even after a trailing event is deleted.

Both stream: a run is read in pages of at most :data:`PAGE_ROWS` events and
:data:`PAGE_BYTES` of stored JSON (at least one event), and the bundle is written as it
is read, section by section: the store process holds one page, its parsed events and
one section's pending output at a time, never a whole run of 100k events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson
from clickhouse_connect.driver.client import Client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentledger import __version__
from agentledger.queries.common import NotFound, Scope, Where, rows
from agentledger.queries.events import StoredEvent
from agentledger.queries.inclusion import run_inclusion
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.schemas.integrity import check_sig, verify_chain

BUNDLE_VERSION: Final = 1
PAGE_ROWS: Final = 1000
PAGE_BYTES: Final = 8 * 1024 * 1024
"""The most stored JSON (``raw``) one page of a run holds."""
# Columns the verifier re-derives from raw; kafka coordinates say where, not what.
CHECKED_COLUMNS: Final = tuple(c for c in EVENT_COLUMNS
                               if c not in ("raw", "kafka_partition", "kafka_offset"))


APPROVAL_EVENTS: Final = ("approval.requested", "approval.resolved")
"""The approval section of a bundle, selected in the store rather than by reading the run."""

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


def verify_run(events: Iterable[StoredEvent], last_seq_ingested: int | None,
               agent_keys: Mapping[str, Ed25519PublicKey] | None = None) -> dict[str, Any]:
    """Chain, columns, completeness and, for agents in ``agent_keys`` (their registered
    ed25519 public keys), every event's ``sig``; names the first broken link.

    ``events`` may be a stream (pages from :func:`run_pages`): it is read once, and only
    the first and last events are kept.
    """
    count = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    first_stored: StoredEvent | None = None
    bad_json: StoredEvent | None = None
    drift: tuple[StoredEvent, str] | None = None
    unsigned: tuple[StoredEvent, str] | None = None
    signatures = {"checked": 0, "bad": 0}

    def parsed() -> Iterator[dict[str, Any]]:
        nonlocal count, first, last, first_stored, bad_json, drift, unsigned
        for stored in events:
            count += 1
            first_stored = first_stored or stored
            if bad_json is not None:
                continue  # counting the rest only
            try:
                event = orjson.loads(stored.raw)
            except orjson.JSONDecodeError:
                bad_json = stored
                continue
            first = first or event
            last = event
            if drift is None:
                try:
                    column = column_drift(stored, event)
                except (KeyError, TypeError, ValueError):
                    column = "body"
                if column:
                    drift = (stored, column)
            public = agent_keys.get(str(event.get("agent"))) if agent_keys else None
            if public is not None:
                signatures["checked"] += 1
                why = check_sig(event, public)
                if why is not None:
                    signatures["bad"] += 1
                    unsigned = unsigned or (stored, f"{why}: agent {event.get('agent')} "
                                                    "must sign with its registered key")
            yield event

    stream = parsed()
    chain = verify_chain(stream)
    for _ in stream:  # the chain stopped at its first broken link; count the rest
        pass
    assert first_stored is not None, "a run has at least one event"
    run_id = first_stored.columns["run_id"]
    if bad_json is not None:
        return _broken(run_id, count, bad_json, "raw is not valid JSON")
    assert first is not None and last is not None
    result = {"run_id": run_id, **chain.to_dict(), "custody": custody(first),
              **({"signatures": signatures} if signatures["checked"] else {})}
    if not chain.ok:
        return result
    if drift is not None:
        return _broken(run_id, count, drift[0],
                       f"column {drift[1]} differs from the event's stored JSON")
    if unsigned is not None:
        return {**_broken(run_id, count, unsigned[0], unsigned[1]), "signatures": signatures}
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


def run_ids(client: Client, scope: Scope, ref: str) -> list[str]:
    """The runs of ``ref`` (a run id or a trace id) the caller may see, in order.

    NotFound when there are none: another tenant's run looks exactly like a missing one.
    """
    where = _ref_where(scope, ref)
    found = rows(client, f"SELECT DISTINCT run_id FROM events WHERE {where.sql()} "
                         "ORDER BY run_id", where.params)
    if not found:
        raise NotFound(f"no run or trace {ref!r}")
    return [r["run_id"] for r in found]


def _ref_where(scope: Scope, ref: str) -> Where:
    return Where().scope(scope).add("(run_id = {ref:String} OR trace_id = {ref:String})",
                                    ref=ref)


def run_pages(client: Client, scope: Scope, ref: str, run_id: str,
              columns: tuple[str, ...] = CHECKED_COLUMNS, *, event_types: tuple[str, ...] = (),
              page_rows: int = PAGE_ROWS, page_bytes: int = PAGE_BYTES,
              ) -> Iterator[list[StoredEvent]]:
    """One run's events (of ``event_types``, or all) in seq order, a bounded page at a time.

    Each page: the next keys and sizes first (small), cut at ``page_rows`` and
    ``page_bytes`` (at least one event), then the payload of exactly that key range.
    Deduplicated like search (``LIMIT 1 BY event_id``); nothing is held between pages but
    the last key.
    """
    after: tuple[int, Any, str] | None = None
    while True:
        where = _ref_where(scope, ref).add("run_id = {run:String}", run=run_id)
        if event_types:
            where.add("event_type IN {types:Array(String)}", types=list(event_types))
        if after is not None:
            where.add("(seq, ts, event_id) > ({a_seq:Int64}, {a_ts:DateTime64(6, 'UTC')}, "
                      "{a_id:UUID})", a_seq=after[0], a_ts=after[1], a_id=after[2])
        keys = rows(client, f"SELECT seq, ts, event_id, length(raw) AS bytes FROM events "
                            f"WHERE {where.sql()} ORDER BY seq, ts, event_id "
                            f"LIMIT 1 BY event_id LIMIT {page_rows}", where.params)
        if not keys:
            return
        used, cut = 0, len(keys)
        for index, key in enumerate(keys):
            if index and used + key["bytes"] > page_bytes:
                cut = index
                break
            used += key["bytes"]
        last = keys[cut - 1]
        more = cut < len(keys) or len(keys) == page_rows
        del keys
        where.add("(seq, ts, event_id) <= ({l_seq:Int64}, {l_ts:DateTime64(6, 'UTC')}, "
                  "{l_id:UUID})", l_seq=last["seq"], l_ts=last["ts"],
                  l_id=str(last["event_id"]))
        found = rows(client, f"SELECT {', '.join(columns)}, raw FROM events "
                             f"WHERE {where.sql()} ORDER BY seq, ts, event_id "
                             "LIMIT 1 BY event_id", where.params)
        page = []
        for row in found:
            raw = row.pop("raw")
            if "event_id" in row:
                row["event_id"] = str(row["event_id"])
            page.append(StoredEvent(row, raw.encode() if isinstance(raw, str) else raw))
        del found
        yield page
        if not more:
            return
        after = (last["seq"], last["ts"], str(last["event_id"]))


def _stored(client: Client, scope: Scope, ref: str, run_id: str,
            columns: tuple[str, ...] = CHECKED_COLUMNS) -> Iterator[StoredEvent]:
    for page in run_pages(client, scope, ref, run_id, columns):
        yield from page


def verify(client: Client, scope: Scope, ref: str,
           agent_keys: Mapping[str, Ed25519PublicKey] | None = None, *,
           inclusion: bool = True) -> dict[str, Any]:
    """Verify every run of ``ref`` (run or trace id), streaming (:func:`verify_run`); with
    ``inclusion``, its proof too (:func:`run_inclusion`: it reads the log's every leaf)."""
    runs_of = run_ids(client, scope, ref)
    last_seqs = _last_seqs(client, scope, runs_of)
    trees: dict[str, Any] = {}
    runs = [verify_run(_stored(client, scope, ref, r), last_seqs.get(r), agent_keys)
            | ({"inclusion": run_inclusion(client, scope, r, trees)} if inclusion else {})
            for r in runs_of]
    return {"ref": ref, "ok": all(r["ok"] for r in runs), "runs": runs}


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


def _events(client: Client, scope: Scope, ref: str, run_id: str,
            *event_types: str) -> Iterator[dict[str, Any]]:
    """The parsed events of one run (of ``event_types``, or all), a page at a time."""
    for page in run_pages(client, scope, ref, run_id, ("run_id", "seq"),
                          event_types=event_types):
        for stored in page:
            yield stored.event


def _array(items: Iterator[Any]) -> Iterator[bytes]:
    """A JSON array written as its items arrive."""
    yield b"["
    for index, item in enumerate(items):
        yield (b"," if index else b"") + orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)
    yield b"]"


def _steps(events: Iterator[dict[str, Any]], *fields: str) -> Iterator[dict[str, Any]]:
    for e in events:
        yield {"seq": e["seq"], "event_id": e["event_id"], **{f: e["body"].get(f) for f in fields}}


def _whole(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for e in events:
        yield {"seq": e["seq"], "event_id": e["event_id"], "event_type": e["event_type"],
               **e["body"]}


def _tools(client: Client, scope: Scope, ref: str, run_id: str) -> Iterator[dict[str, Any]]:
    """Each tool call with its result (same span), in call order; a page of calls at a time
    with just their results."""
    for page in run_pages(client, scope, ref, run_id, ("run_id", "seq"),
                          event_types=("tool.call",)):
        calls = [stored.event for stored in page]
        spans = sorted({c["span_id"] for c in calls})
        where = _ref_where(scope, ref).add("run_id = {run:String}", run=run_id).add(
            "event_type = 'tool.result'").add("span_id IN {spans:Array(String)}", spans=spans)
        results = {}
        for row in rows(client, f"SELECT raw FROM events WHERE {where.sql()} "
                                "ORDER BY seq, ts, event_id LIMIT 1 BY event_id",
                        where.params):
            result = orjson.loads(row["raw"])
            results[result["span_id"]] = result
        for call, result in _pair_tools({"tool.call": calls,
                                         "tool.result": list(results.values())}):
            yield {**call, **{k: v for k, v in (result or {}).items() if k not in call}}


def _first(events: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    return next(events, None)


def _run_bundle(client: Client, scope: Scope, ref: str, run_id: str, last_seq: int | None,
                verdicts: list[bool], trees: dict[str, Any]) -> Iterator[bytes]:
    """One run's bundle, section by section (the keys of the old whole-run bundle, in its
    order), each section read from the store as it is written."""
    first = _first(_events(client, scope, ref, run_id))
    assert first is not None, "the run was listed, so it has events"
    head = {k: first.get(k) if k == "on_behalf_of" else first[k] for k in (
        "run_id", "trace_id", "tenant", "workspace", "agent", "agent_version", "principal",
        "on_behalf_of", "env")}
    started = _first(_events(client, scope, ref, run_id, "run.started"))
    inputs = None
    if started:
        b = started["body"]
        inputs = {"workflow": b["workflow"], "inputs_hash": b["inputs_hash"],
                  "input_ref": b.get("input_ref"), "prompt_template": b["prompt_template"],
                  "prompt_version": b["prompt_version"], "model_config": b.get("model_config"),
                  "policy_version": b["policy_version"], "budget": b.get("budget")}
    yield orjson.dumps({**head, "inputs": inputs})[:-1]  # the object stays open
    sections: list[tuple[str, Iterator[dict[str, Any]]]] = [
        ("retrievals", _steps(_events(client, scope, ref, run_id, "retrieval"), "source",
                              "index_version", "doc_ids", "doc_hashes")),
        ("models", _steps(_events(client, scope, ref, run_id, "model.call"), "provider",
                          "model", "model_version", "role", "price_version", "tokens_in",
                          "tokens_out", "cost_usd", "status")),
        ("tools", _tools(client, scope, ref, run_id)),
        ("policy_decisions", _steps(_events(client, scope, ref, run_id, "policy.decision"),
                                    "policy_id", "policy_version", "rule", "decision",
                                    "action")),
        ("approvals", _whole(_events(client, scope, ref, run_id, *APPROVAL_EVENTS))),
        ("interventions", _whole(_events(client, scope, ref, run_id, "human.override",
                                         "rollback"))),
    ]
    for name, items in sections:
        yield b',"' + name.encode() + b'":'
        yield from _array(items)
    finished = _first(_events(client, scope, ref, run_id, "run.finished"))
    yield b',"outcome":' + orjson.dumps(finished["body"] if finished else None)
    yield b',"events":'
    yield from _array(_events(client, scope, ref, run_id))
    verification = verify_run(_stored(client, scope, ref, run_id), last_seq)
    verdicts.append(bool(verification["ok"]))
    yield b',"verification":' + orjson.dumps(verification, option=orjson.OPT_NON_STR_KEYS)
    yield b',"inclusion":' + orjson.dumps(run_inclusion(client, scope, run_id, trees))
    yield b"}"


def replay_stream(client: Client, scope: Scope, ref: str) -> Iterator[bytes]:
    """The replay bundle of ``ref`` as JSON bytes, written while it is read.

    The same document :func:`replay_bundle` returns (``verified`` comes last, once every
    run is verified). NotFound is raised here, before the first byte, so the route can
    still answer 404.
    """
    runs_of = run_ids(client, scope, ref)
    last_seqs = _last_seqs(client, scope, runs_of)
    header = {"bundle_version": BUNDLE_VERSION, "generated_by": f"agentledger {__version__}",
              "generated_at": dt.datetime.now(dt.UTC).isoformat(), "ref": ref}

    def chunks() -> Iterator[bytes]:
        verdicts: list[bool] = []
        trees: dict[str, Any] = {}  # each log's tree, read once for all the runs
        yield orjson.dumps(header)[:-1] + b',"runs":['
        for index, run_id in enumerate(runs_of):
            yield from [b","] if index else []
            yield from _run_bundle(client, scope, ref, run_id, last_seqs.get(run_id),
                                   verdicts, trees)
        yield b'],"verified":' + orjson.dumps(all(verdicts)) + b"}"

    return chunks()


def replay_bundle(client: Client, scope: Scope, ref: str) -> dict[str, Any]:
    """Everything needed to reproduce the run(s) of ``ref`` without guessing, as one dict
    (for in-process callers; the API streams :func:`replay_stream` instead)."""
    parsed: dict[str, Any] = orjson.loads(b"".join(replay_stream(client, scope, ref)))
    return parsed
