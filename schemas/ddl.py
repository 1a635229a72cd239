"""ClickHouse DDL as ordered migration files in ``schemas/clickhouse/``.

Placeholders (``{db}``, ``{events_ttl_days}``, ...) are filled from validated settings —
identifiers matching ``[A-Za-z_][A-Za-z0-9_]*`` and integers — never from user input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("schemas").joinpath("clickhouse").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def render(sql: str, *, db: str, events_ttl_days: int, rejected_ttl_days: int) -> str:
    if not _IDENT.match(db):
        raise ValueError(f"invalid database name {db!r}")
    return sql.format(
        db=db, events_ttl_days=int(events_ttl_days), rejected_ttl_days=int(rejected_ttl_days)
    )
