"""Overrides with a name (issue 23): manual safe-mode holds and releases go through
``POST /v1/control/overrides`` with an operator key; the override carries the key's name
as ``by``, is signed with the ledger's key, and the guard obeys it. A tenant key gets 403;
a missing reason is a 422 naming it. Real Tansu broker, real chdb store and API."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from agentledger.auth import ALL_TENANTS, append_entry, entry_for, new_key
from agentledger.core import discovery, signing
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas.signals import NORMAL, READ_ONLY
from agentledger.services import ApiServer, open_store, start_api
from tests.conftest import CLI
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
ROUTE = "/v1/control/overrides"


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    keys = {"oncall": new_key(), "acme": new_key()}
    append_entry(settings, entry_for("oncall-alice", keys["oncall"], [ALL_TENANTS]))
    append_entry(settings, entry_for("acme-reader", keys["acme"], ["acme"]))
    open_store(settings).close()
    server = start_api(settings, client_for(settings))
    discovery.publish(settings, discovery.STORE_FILE, {"api_url": server.url})
    try:
        yield server, keys
    finally:
        discovery.withdraw(settings, discovery.STORE_FILE)
        server.stop()


def _post(server: ApiServer, key: str, body: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + ROUTE, json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def test_an_override_through_the_api_carries_the_keys_name_and_holds_the_guard(
        settings: Settings, api: tuple[ApiServer, dict[str, str]]) -> None:
    server, keys = api
    bootstrap = settings.kafka_bootstrap or ""
    held = _post(server, keys["oncall"], {"tenant": "acme", "agent": "crm-agent",
                                          "state": "read_only", "reason": "incident 42"})
    assert held.status_code == 200, held.text
    assert held.json()["by"] == "oncall-alice" and held.json()["state"] == "read_only"
    # the ledger key signs it (read trusting only that key): a follower that verifies obeys
    trusted = signing.local_keyring(signing.key_dir(settings))
    assert trusted.keys, "the API made the ledger key under the data dir"
    with ControlFollower(bootstrap, trusted=trusted) as follower:
        guard = SafeModeGuard(follower, "acme", "crm-agent", stale_after_s=3600)
        wait_for(lambda: guard.mode == READ_ONLY, 30, what="the API's override at the guard")
        signal = follower.get("override", "acme/crm-agent")
        assert signal is not None and signal.details["by"] == "oncall-alice", signal
        assert signal.reason == "incident 42" and follower.invalid == 0
        cleared = _post(server, keys["oncall"], {"tenant": "acme", "agent": "crm-agent",
                                                 "state": "clear", "reason": "fixed"})
        assert cleared.status_code == 200 and cleared.json()["state"] == "cleared", cleared.text
        wait_for(lambda: guard.mode == NORMAL, 30, what="the clear at the guard")


def test_a_tenant_key_gets_403_and_a_missing_reason_is_named(
        api: tuple[ApiServer, dict[str, str]]) -> None:
    server, keys = api
    body = {"tenant": "acme", "agent": "crm-agent", "state": "halted", "reason": "x"}
    assert _post(server, keys["acme"], body).status_code == 403
    assert _post(server, "al_not-a-key", body).status_code == 401
    for reason in (None, "", "   "):
        bad = {k: v for k, v in {**body, "reason": reason}.items() if v is not None}
        answer = _post(server, keys["oncall"], bad)
        assert answer.status_code == 422, answer.text
        assert "reason" in answer.json()["detail"], answer.text
    wrong = _post(server, keys["oncall"], {**body, "state": "sideways"})
    assert wrong.status_code == 422 and "state" in wrong.json()["detail"]
    scope = _post(server, keys["oncall"], {**body, "tenant": "acme/eu"})
    assert scope.status_code == 422 and "tenant" in scope.json()["detail"]


def test_the_cli_uses_the_route_and_names_the_key(
        settings: Settings, service_env: dict[str, str],
        api: tuple[ApiServer, dict[str, str]]) -> None:
    _, keys = api
    env = {**service_env, "AGENTLEDGER_API_KEY": keys["oncall"]}
    done = subprocess.run([*CLI, "safe-mode", "set", "acme/crm-agent", "--reason", "drill",
                           "--mode", "halted", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"by":"oncall-alice"' in done.stdout.replace(" ", ""), done.stdout
    env["AGENTLEDGER_API_KEY"] = keys["acme"]
    refused = subprocess.run([*CLI, "safe-mode", "clear", "acme/crm-agent", "--reason", "x"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "operator key" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
