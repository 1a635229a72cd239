"""Bring the ClickHouse schema up to date. Idempotent: run by every process that opens
the store (sink, API) at start.

Migrations are recorded in ``schema_migrations``; a migration runs its statements (all
``IF NOT EXISTS``) and, the first time only, the backfills of the views it creates.
Retention is not a migration: every start compares each table's TTL with the settings
and alters the tables whose retention changed.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from agentledger.schemas.ddl import (
    RETENTION,
    backfill_for,
    migrations,
    render,
    table_ttl_days,
    ttl_clause,
)

log = logging.getLogger(__name__)


def migrate(client: Client, *, db: str, ttl_days: dict[str, int]) -> list[str]:
    """Create the database, apply new migrations, then retention. Returns what ran.

    Two processes starting at once may both apply a new migration: every statement is
    ``IF NOT EXISTS`` and every backfilled view is idempotent, so that is harmless.
    """
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version")
    done = {row[0] for row in client.query(
        f"SELECT version FROM {db}.schema_migrations").result_rows}
    applied = []
    for m in migrations():
        if m.version in done:
            continue
        for statement in m.statements:
            sql = render(statement, db=db, ttl_days=ttl_days)
            client.command(sql)
            backfill = backfill_for(sql)
            if backfill:
                client.command(backfill)
        client.insert(f"{db}.schema_migrations", [[m.version, m.name]],
                      column_names=["version", "name"])
        applied.append(m.name)
    altered = apply_retention(client, db=db, ttl_days=ttl_days)
    log.info("schema ready", extra={"db": db, "migrations": applied, "retention": altered})
    return applied


def apply_retention(client: Client, *, db: str, ttl_days: dict[str, int]) -> dict[str, int]:
    """ALTER the tables whose TTL differs from the settings; returns {table: new days}."""
    current = table_ttl_days(client, db)
    altered = {}
    for table, retention in RETENTION.items():
        want = int(ttl_days[retention.placeholder])
        if table in current and current[table] != want:
            client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {ttl_clause(table, want)}")
            altered[table] = want
    return altered
