"""ClickHouse DDL as ordered migration files in ``schemas/clickhouse/``.

A file holds one or more statements separated by ``;`` at a line end. Placeholders
(``{db}``, ``{events_ttl_days}``, ...) are filled from validated settings — an identifier
matching ``[A-Za-z_][A-Za-z0-9_]*`` and integers — never from user input.

A materialized view only sees rows inserted after it exists, so every
``CREATE MATERIALIZED VIEW ... TO target AS SELECT`` also yields a backfill,
``INSERT INTO target SELECT ...``, run once when the migration is first applied. The
views' aggregates are idempotent (see each file), so rows the live view and the backfill
both see are not counted twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VIEW = re.compile(r"CREATE\s+MATERIALIZED\s+VIEW\s+.*?\s+TO\s+(\S+)\s+AS\s+(SELECT\b.*)\Z",
                   re.S | re.I)
_COMMENT_LINE = re.compile(r"^\s*--.*$", re.M)
_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.S)


@dataclass(frozen=True)
class Retention:
    """How a table expires rows: the TTL placeholder its DDL uses and the time expression."""

    placeholder: str
    expression: str


# Table → its TTL. `agentledger retention show` and the migration that applies changed
# settings to existing tables both read this; the DDL files use the same placeholders.
RETENTION: Final[dict[str, Retention]] = {
    "events": Retention("events_ttl_days", "toDateTime(ts)"),
    "rejected_events": Retention("rejected_ttl_days", "toDateTime(received_at)"),
    "control_signals": Retention("control_ttl_days", "toDateTime(ts)"),
    "metrics": Retention("metrics_ttl_days", "toDateTime(window_start)"),
    "run_summaries": Retention("summaries_ttl_days", "toDateTime(last_event_at)"),
    "tool_health_minute": Retention("health_ttl_days", "minute"),
    "daily_economics": Retention("economics_ttl_days", "day"),
    # a copy of the events' approval requests (for lookups by id): kept as long as they
    "approval_requests": Retention("events_ttl_days", "toDateTime(ts)"),
    # where the copies of leaves were (reconcile's accounting): as long as the events
    "duplicate_copies": Retention("events_ttl_days", "toDateTime(landed_at)"),
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    statements: list[str] = field(default_factory=list)


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("agentledger.schemas").joinpath("clickhouse").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            sql = entry.read_text()
            found.append(Migration(int(version), name, sql, split_statements(sql)))
    return sorted(found, key=lambda m: m.version)


def split_statements(sql: str) -> list[str]:
    """Statements of a file: split at ``;`` ending a line, comment lines dropped."""
    bare = _COMMENT_LINE.sub("", sql)
    return [s.strip() for s in re.split(r";\s*$", bare, flags=re.M) if s.strip()]


def backfill_for(statement: str) -> str | None:
    """``INSERT INTO target SELECT ...`` for a materialized view with ``TO``, else None."""
    match = _VIEW.match(statement.strip())
    if not match:
        return None
    return f"INSERT INTO {match.group(1)} {match.group(2)}"


def render(sql: str, *, db: str, ttl_days: dict[str, int]) -> str:
    if not _IDENT.match(db):
        raise ValueError(f"invalid database name {db!r}")
    missing = {r.placeholder for r in RETENTION.values()} - set(ttl_days)
    if missing:
        raise ValueError(f"no retention given for {sorted(missing)}")
    return sql.format(db=db, **{k: int(v) for k, v in ttl_days.items()})


def ttl_clause(table: str, days: int) -> str:
    """The TTL clause of ``table`` for ``days`` of retention, as the DDL writes it."""
    return f"{RETENTION[table].expression} + INTERVAL {int(days)} DAY"


def table_ttl_days(client: Client, db: str) -> dict[str, int | None]:
    """The retention (days) each ledger table has now, from ``system.tables``."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": db}).result_rows
    found: dict[str, int | None] = {}
    for name, engine_full in rows:
        if name in RETENTION:
            match = _TTL_DAYS.search(engine_full)
            found[name] = int(match.group(1)) if match else None
    return found
