"""Keys that can die (issue 23): ``keys revoke NAME`` and ``keys create --expires``.

A revoked key and an expired key must get 401 from the ledger API and from the OTLP
intake, without a restart; expiry is checked at every request, not only when the keys
file changes. Real chdb store and real uvicorn servers on loopback, as in
test_keys_reload.py; waits poll a condition against a deadline."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentledger.api.traces import create_intake_app
from agentledger.auth import (
    ReloadingKeyRing,
    append_entry,
    entry_for,
    keys_file,
    new_key,
    revoke_entry,
)
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.services import ApiServer, open_store, serve_app, start_api
from tests.conftest import CLI
from tests.helpers import wait_for

Served = tuple[Settings, ApiServer, str, dict[str, str]]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "data")
    keys = {"doomed": new_key(), "stale": new_key(), "keep": new_key()}
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    append_entry(settings, entry_for("acme-doomed", keys["doomed"], ["acme"]))
    append_entry(settings, entry_for("acme-stale", keys["stale"], ["acme"], expires=past))
    append_entry(settings, entry_for("acme-reader", keys["keep"], ["acme"]))
    open_store(settings).close()
    api = start_api(settings, client_for(settings))
    server, thread, intake_url = serve_app(create_intake_app(settings), "127.0.0.1", 0,
                                           name="intake")
    try:
        yield settings, api, intake_url, keys
    finally:
        server.should_exit = True
        thread.join(10)
        api.stop()


def _statuses(api_url: str, intake_url: str, key: str) -> dict[str, int]:
    auth = {"Authorization": f"Bearer {key}"}
    return {
        "api": httpx.get(f"{api_url}/v1/events", headers=auth, timeout=10).status_code,
        "intake": httpx.post(f"{intake_url}/v1/traces", content=b"", timeout=10,
                             headers={**auth, "Content-Type": "application/x-protobuf"}
                             ).status_code,
    }


def test_a_revoked_key_gets_401_from_the_api_and_the_intake(served: Served) -> None:
    settings, api, intake_url, keys = served
    before = _statuses(api.url, intake_url, keys["doomed"])
    assert 401 not in before.values(), before  # the key works everywhere first

    revoke_entry(settings, "acme-doomed")
    seen: list[dict[str, int]] = []

    def refused() -> bool:
        seen.append(_statuses(api.url, intake_url, keys["doomed"]))
        return set(seen[-1].values()) == {401}

    # Rings look at the file at most every 0.5 s; 5 s is an outer bound for a loaded
    # machine, not the claim (no wall-clock asserts).
    wait_for(refused, timeout_s=15, what="the revoked key refused by both")
    assert seen[-1] == {"api": 401, "intake": 401}, seen
    kept = _statuses(api.url, intake_url, keys["keep"])
    assert 401 not in kept.values(), kept  # the other keys still work


def test_an_expired_key_gets_401_from_the_api_and_the_intake(served: Served) -> None:
    _, api, intake_url, keys = served
    assert _statuses(api.url, intake_url, keys["stale"]) == {"api": 401, "intake": 401}


def test_expiry_is_checked_at_request_time_not_only_at_reload(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = new_key()
    dies = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    append_entry(settings, entry_for("short-lived", key, ["acme"], expires=dies))
    ring = ReloadingKeyRing(settings)
    first = ring.authenticate(key)
    if time.time() < dies.timestamp() - 0.1:  # a stalled machine may already be past it
        assert first is not None and first.name == "short-lived"
    stamp = keys_file(settings).stat().st_mtime_ns
    wait_for(lambda: ring.authenticate(key) is None, timeout_s=10,
             what="the key refused once its expiry passed")
    assert keys_file(settings).stat().st_mtime_ns == stamp  # no file change triggered it


def _cli(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(data_dir)}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_keys_list_shows_expiry_and_revoked_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = _cli(["keys", "create", "ci-bot", "--tenant", "acme", "--expires", "90d"], data)
    assert created.returncode == 0, created.stderr
    assert "valid until" in created.stderr and created.stdout.startswith("al_")
    assert _cli(["keys", "create", "old", "--tenant", "acme"], data).returncode == 0
    revoked = _cli(["keys", "revoke", "old"], data)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr, revoked.stderr

    listed = _cli(["keys", "list", "--json"], data)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["ci-bot"]["state"] == "active"
    expires = dt.datetime.fromisoformat(rows["ci-bot"]["expires"])
    assert dt.timedelta(days=89) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=90)
    assert rows["old"] == {**rows["old"], "state": "revoked", "expires": None}
    table = _cli(["keys", "list"], data)
    assert "revoked" in table.stdout and "expires" in table.stdout, table.stdout


def test_bad_expiry_and_unknown_key_are_one_line_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (["keys", "create", "x", "--tenant", "acme", "--expires", "soon"],
                 ["keys", "create", "x", "--tenant", "acme", "--expires", "2001-01-01"],
                 ["keys", "revoke", "nobody"]):
        done = _cli(args, data)
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, \
            done.stderr
