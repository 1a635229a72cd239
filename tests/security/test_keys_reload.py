"""Finding 7: a key removed from ``api-keys.yaml`` kept working in the ledger API (the
OTLP intake reloaded, the API did not). Both now use one ``ReloadingKeyRing``.

The attack: a key that reads and votes for acme is deleted from the keys file; it must get
401 from the ledger API (a read route and a vote route) and from the intake process's app
within a second. Real chdb store, real uvicorn servers on loopback; waits poll a condition
against a deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from agentledger.api.traces import create_intake_app
from agentledger.auth import append_entry, entry_for, keys_file, new_key
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.services import ApiServer, open_store, serve_app, start_api


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Settings, ApiServer, str, dict[str, str]]]:
    settings = Settings(data_dir=tmp_path / "data")
    keys = {"acme": new_key(), "keep": new_key()}
    append_entry(settings, entry_for("acme-approver", keys["acme"], ["acme"],
                                     roles=["finance"]))
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


def _remove(settings: Settings, name: str) -> None:
    path = keys_file(settings)
    document = yaml.safe_load(path.read_text())
    document["keys"] = [k for k in document["keys"] if k["name"] != name]
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_a_removed_key_gets_401_from_the_api_and_the_intake_within_a_second(served):
    settings, api, intake_url, keys = served
    auth = {"Authorization": f"Bearer {keys['acme']}"}
    routes = [
        ("GET", f"{api.url}/v1/events", None),
        ("POST", f"{api.url}/v1/approvals/00000000-0000-7000-8000-000000000000/approve",
         {"reason": "looks fine"}),
        ("POST", f"{intake_url}/v1/traces", None),
    ]

    def status(method: str, url: str, body: dict | None) -> int:
        if url.endswith("/v1/traces"):
            return httpx.post(url, content=b"", timeout=10,
                              headers={**auth, "Content-Type": "application/x-protobuf"}
                              ).status_code
        return httpx.request(method, url, json=body, headers=auth, timeout=10).status_code

    before = {url: status(m, url, b) for m, url, b in routes}
    assert all(code != 401 for code in before.values()), before  # the key works everywhere

    _remove(settings, "acme-approver")
    removed_at = time.monotonic()
    seen: dict[str, list[int]] = {url: [] for _, url, _ in routes}
    pending = {url for _, url, _ in routes}
    deadline = removed_at + 15.0  # a generous outer bound; the claim is checked below
    while pending and time.monotonic() < deadline:
        for method, url, body in routes:
            if url in pending:
                seen[url].append(status(method, url, body))
                if seen[url][-1] == 401:
                    pending.discard(url)
    assert not pending, f"still accepted after 15 s: {seen}"
    # The rings look at the files at most every 0.5 s (RELOAD_INTERVAL_S); the deadline
    # above is an outer bound for a loaded machine, not the claim (no wall-clock asserts).
    for url, codes in seen.items():
        assert codes[-1] == 401, (url, codes)

    other = httpx.get(f"{api.url}/v1/events", timeout=10,
                      headers={"Authorization": f"Bearer {keys['keep']}"})
    assert other.status_code == 200, other.text  # the keys left in the file still work
