"""Post-action verification per tool: how many writes a read-back confirmed.

A tool call run with a read-back (``ToolCallContext.invoke(fn, read_back=...)``) records
its verdict in the ``tool.result``'s ``verified`` (true: the read-back saw the write;
false: it did not, or failed). Results without a read-back (``verified`` null) are not
counted. The rate is ``verified / (verified + unverified)`` per tool.

Read from ``events`` (the ``verified`` flag lives in the body, and ``tool_health_minute``
has no column for it); counts are ``uniqExact`` over event ids, so a redelivered event is
counted once without FINAL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import Scope, Where, rows


def verified_writes(client: Client, scope: Scope, since: dt.datetime | None,
                    until: dt.datetime | None, *, tenant: str | None = None,
                    agent: str | None = None, tool: str | None = None,
                    bucket_minutes: int | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(tool,) — or (bucket, tool) with ``bucket_minutes`` — → verified, unverified and
    verified_rate (None when no write of that tool was read back)."""
    where = Where().scope(scope.narrow(tenant)).between("ts", since, until)
    where.equals("agent", agent).equals("tool", tool).add("event_type = 'tool.result'")
    bucket = ""
    if bucket_minutes:
        bucket = ("toStartOfInterval(toDateTime(ts, 'UTC'), toIntervalMinute({bucket:UInt32})) "
                  "AS bucket, ")
        where.params["bucket"] = bucket_minutes
    found = rows(client, (
        f"SELECT {bucket}tool, "
        "uniqExactIf(event_id, JSONExtractRaw(body, 'verified') = 'true') AS verified, "
        "uniqExactIf(event_id, JSONExtractRaw(body, 'verified') = 'false') AS unverified "
        f"FROM events WHERE {where.sql()} GROUP BY {'bucket, ' if bucket else ''}tool"),
        where.params)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in found:
        checked = row["verified"] + row["unverified"]
        key = (row["bucket"], row["tool"]) if bucket else (row["tool"],)
        out[key] = {"verified_writes": row["verified"], "unverified_writes": row["unverified"],
                    "verified_rate": round(row["verified"] / checked, 6) if checked else None}
    return out


EMPTY = {"verified_writes": 0, "unverified_writes": 0, "verified_rate": None}
"""The figures of a tool with no read-back recorded."""
