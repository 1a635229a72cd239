"""The one ClickHouse client factory.

A DSN picks the engine: ``chdb:///dir`` opens the in-process ClickHouse engine on that
directory (one process at a time may own it — see :func:`claim_store`), anything else is
a ClickHouse server over HTTP. Both are clickhouse-connect clients speaking the same SQL.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from agentledger.core.settings import Settings


class StoreBusy(RuntimeError):
    """Another process owns the embedded store; ask it (via the API) instead."""


def client_for(settings: Settings, *, database: bool = True, readonly: bool = False,
               **kwargs: Any) -> Client:
    """A clickhouse-connect client for the configured store.

    With ``database=False`` no database is selected, for the migration that creates it.
    With ``readonly=True`` and a server, it connects as the read-only user of
    ``clickhouse_readonly_dsn`` (the SQL endpoint's), so a query meets that user's grants.
    """
    dsn = settings.dsn
    if readonly and settings.clickhouse_readonly_dsn is not None and not settings.embedded_store:
        dsn = settings.clickhouse_readonly_dsn.get_secret_value()
    db = settings.clickhouse_database if database else None
    if settings.embedded_store:
        path = settings.chdb_path
        assert path is not None
        path.mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=dsn, database=db, **kwargs)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the embedded store needs chdb: pip install 'agentledger[embedded]'"
            ) from exc
    return clickhouse_connect.get_client(dsn=dsn, database=db, **kwargs)


def claim_store(settings: Settings) -> IO[str] | None:
    """Take the embedded store's exclusive lock for this process's lifetime.

    chdb corrupts nothing when two processes open one directory, it refuses or misbehaves;
    a lock file turns that into a clear error. Returns the open lock file (keep it
    referenced), or None for a server DSN, where no lock is needed.
    """
    path = settings.chdb_path
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    lock: IO[str] = open(Path(path) / ".owner.lock", "a+")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "another process"
        lock.close()
        raise StoreBusy(
            f"the embedded store {path} is owned by pid {owner}; query it through that "
            "process's API (agentledger sql finds it), or stop it first"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
