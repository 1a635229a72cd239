"""Bring the ClickHouse schema up to date. Idempotent: run by every sink at start."""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from schemas.ddl import migrations, render

log = logging.getLogger(__name__)


def migrate(
    client: Client, *, db: str, events_ttl_days: int, rejected_ttl_days: int
) -> list[str]:
    """Create the database and every table (TTLs from settings).

    Returns the names of the migrations applied. Every statement is ``IF NOT EXISTS``, so
    two sinks starting at once both succeed.
    """
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    applied = []
    for m in migrations():
        client.command(
            render(m.sql, db=db, events_ttl_days=events_ttl_days,
                   rejected_ttl_days=rejected_ttl_days)
        )
        applied.append(m.name)
    log.info("schema ready", extra={"db": db, "migrations": applied})
    return applied
