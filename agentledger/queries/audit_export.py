"""Audit export in pages: the exact stored events (JSONL of ``raw``) or their columns
(Parquet, written by ClickHouse itself).

A page is the events after the cursor in (ts, event_id) order, deduplicated like search:
at most ``limit`` of them and at most :data:`PAGE_BYTES` of stored JSON (always at least
one event). Clients loop until no next cursor, so an export of any size runs in bounded
memory on both sides, and an interrupted export resumes from its last cursor.

Why a byte budget and not rows alone: the API runs in the store process, which also runs
the sink and, embedded, the engine. 100k rows of events up to 256 KiB each is 25 GiB; a
page of at most 16 MiB of ``raw`` keeps one request's payload (ClickHouse's output, the
bytes in Python, the response) to a few times that, whatever the events weigh.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import QueryError, Scope, Where, rows
from agentledger.queries.events import decode_cursor, encode_cursor

ExportFormat = Literal["jsonl", "parquet"]
MAX_EXPORT_PAGE: Final = 100_000
PAGE_BYTES: Final = 16 * 1024 * 1024
"""The most stored JSON (``raw``, plus ``body`` for Parquet) one page carries."""
PARQUET_COLUMNS: Final = (
    "event_id", "ts", "event_type", "tenant", "workspace", "agent", "agent_version",
    "principal", "on_behalf_of", "env", "trace_id", "span_id", "parent_span_id", "run_id",
    "seq", "workflow", "tool", "action", "mode", "tool_version", "status", "error_type",
    "error", "outcome", "provider", "model", "tokens_in", "tokens_out", "cost_usd",
    "latency_ms", "decision", "prev_hash", "hash", "sig", "body", "raw",
)


@dataclass(frozen=True)
class ExportPage:
    data: bytes
    rows: int
    next_cursor: str | None
    total: int | None


def _where(scope: Scope, since: dt.datetime | None, until: dt.datetime | None,
           tenant: str | None) -> Where:
    return Where().scope(scope.narrow(tenant)).between("ts", since, until)


def export_page(client: Client, scope: Scope, *, since: dt.datetime | None,
                until: dt.datetime | None, fmt: ExportFormat, tenant: str | None = None,
                cursor: str | None = None, limit: int = 50_000,
                page_bytes: int = PAGE_BYTES) -> ExportPage:
    """One page of the export; ``total`` (events in the whole range) on the first page."""
    if not 1 <= limit <= MAX_EXPORT_PAGE:
        raise QueryError(f"limit must be between 1 and {MAX_EXPORT_PAGE}")
    if fmt not in ("jsonl", "parquet"):
        raise QueryError(f"unknown export format {fmt!r}: use jsonl or parquet")
    where = _where(scope, since, until, tenant)
    total = None
    if cursor is None:
        total = rows(client, f"SELECT uniqExact(event_id) AS n FROM events WHERE {where.sql()}",
                     where.params)[0]["n"]
    else:
        ts, event_id = decode_cursor(cursor)
        where.add("(ts, event_id) > ({cursor_ts:DateTime64(6, 'UTC')}, {cursor_id:UUID})",
                  cursor_ts=ts, cursor_id=event_id)
    # The page's keys and sizes first (small), so the payload query knows its last row.
    size = "length(raw)" if fmt == "jsonl" else "length(raw) + length(body)"
    keys = rows(client, f"SELECT ts, event_id, {size} AS bytes FROM events "
                        f"WHERE {where.sql()} ORDER BY ts, event_id LIMIT 1 BY event_id "
                        f"LIMIT {limit + 1}", where.params)
    if not keys:
        return ExportPage(b"", 0, None, total)
    keys, more = _within_budget(keys, limit, page_bytes)
    last = keys[-1]
    where.add("(ts, event_id) <= ({last_ts:DateTime64(6, 'UTC')}, {last_id:UUID})",
              last_ts=last["ts"], last_id=str(last["event_id"]))
    if fmt == "jsonl":
        # Valid JSON holds raw newlines only between tokens; a space keeps one per line.
        sql = (f"SELECT replaceRegexpAll(raw, '[\\r\\n]+', ' ') FROM events "
               f"WHERE {where.sql()} ORDER BY ts, event_id LIMIT 1 BY event_id FORMAT TSVRaw")
    else:
        sql = (f"SELECT {', '.join(PARQUET_COLUMNS)} FROM events WHERE {where.sql()} "
               "ORDER BY ts, event_id LIMIT 1 BY event_id FORMAT Parquet")
    # No per-query settings here: on the chdb client, raw_query's settings stay on the
    # session (a readonly=2 would refuse every later insert). This SELECT is ours anyway.
    data = client.raw_query(sql, parameters=where.params)
    next_cursor = encode_cursor(last["ts"], str(last["event_id"])) if more else None
    return ExportPage(data, len(keys), next_cursor, total)


def _within_budget(keys: list[dict[str, Any]], limit: int,
                   page_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    """The leading keys that fit ``limit`` rows and ``page_bytes`` (at least one), and
    whether any key is left for a next page."""
    used = 0
    for index, key in enumerate(keys):
        if index == limit or (index and used + key["bytes"] > page_bytes):
            return keys[:index], True
        used += key["bytes"]
    return keys, False


def describe(page: ExportPage) -> dict[str, Any]:
    return {"rows": page.rows, "next_cursor": page.next_cursor, "total": page.total}
