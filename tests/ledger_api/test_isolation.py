"""The ledger API over the real pipeline: tenant isolation and hostile input (the store:
``conftest.py``)."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.ledger_api.ledger_store import Store

pytestmark = pytest.mark.integration


# -- tenant isolation and hostile input ----------------------------------------------------


def _v1_get_routes(store: Store) -> list[str]:
    app = store.api.server.config.app
    return sorted(r.path for r in app.routes
                  if r.path.startswith("/v1/") and "GET" in getattr(r, "methods", ()))


def _probe_paths(store: Store) -> dict[str, dict[str, Any]]:
    globex_run = store.runs("globex")[-1]
    globex_trace = next(e["trace_id"] for e in store.events if e["run_id"] == globex_run)
    globex_approval = next(e["body"]["approval_id"] for e in store.events
                           if e["tenant"] == "globex" and e["event_type"] == "approval.requested")
    return {
        "/v1/events": {"limit": 1000},
        f"/v1/timeline/{globex_run}": {},
        f"/v1/replay/{globex_trace}": {},
        f"/v1/verify/{globex_run}": {},
        "/v1/tools/health": {"since": "30d"},
        "/v1/control/history": {},
        "/v1/control/state": {},
        "/v1/control/stream": {"tenant": "globex"},  # refused before it streams
        "/v1/control/explain": {"scope": "acme/triage-bot"},  # globex's: 403 (asserted below)
        "/v1/control/results": {"since": "30d"},
        "/v1/control/board": {},
        "/v1/permissions": {},
        "/v1/webhooks": {},
        "/v1/watch": {},
        "/v1/margins": {"by": "tenant", "since": "30d"},
        "/v1/gate": {"baseline": "agent_version=1.4.2", "candidate": "agent_version=3.1.0",
                     "since": "30d"},
        "/v1/regression/export": {"workflow": "ticket_triage", "since": "30d"},
        "/v1/regression/results": {"set_id": "0123456789abcdef", "label": "candidate"},
        "/v1/revenue": {},
        "/v1/export": {"limit": 100_000},
        "/v1/health": {},
        "/v1/retention": {},
        "/v1/sink": {},
        "/v1/approvals": {"since": "30d"},
        "/v1/approvals/stats": {"since": "30d", "by": "tenant"},
        f"/v1/approvals/{globex_approval}": {},
    }


def test_a_tenant_key_sees_nothing_of_another_tenant(store: Store):
    probes = _probe_paths(store)
    for template in _v1_get_routes(store):  # a new endpoint must get a probe here
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        assert any(pattern.match(p) for p in probes), f"no isolation probe for {template}"
    globex_ids = {e["run_id"] for e in store.events if e["tenant"] == "globex"}
    for path, params in probes.items():
        response = store.get(path, "acme", **params)
        assert response.status_code in (200, 403, 404), (path, response.text)
        text = response.text.replace(path.rsplit("/", 1)[-1], "")  # a 404 echoes the id
        assert "globex" not in text, f"{path} leaked globex rows"
        assert not any(run_id in text for run_id in globex_ids), path
        if path == "/v1/export":
            lines = [orjson.loads(line) for line in text.splitlines()]
            assert lines and {e["tenant"] for e in lines} == {"acme"}
        if path == "/v1/margins":
            assert {g["key"] for g in response.json()["groups"]} == {"acme"}
        # no key → 401; an unknown key → 401; asking for the other tenant → 403
        assert store.get(path, None, **params).status_code == 401
        bogus = httpx.get(store.api.url + path, params=params, timeout=30,
                          headers={"X-API-Key": "al_not-a-key"})
        assert bogus.status_code == 401
        if path in ("/v1/events", "/v1/margins", "/v1/control/state", "/v1/export",
                    "/v1/control/board", "/v1/permissions", "/v1/webhooks"):
            assert store.get(path, "acme", tenant="globex", **params).status_code == 403
    assert store.get("/v1/control/explain", "acme", scope="globex/triage-bot").status_code \
        == 403
    # the other tenant's own key does see its rows
    mine = store.get("/v1/events", "globex", limit=10).json()["events"]
    assert mine and {e["tenant"] for e in mine} == {"globex"}
    # raw SQL and store metadata are for operator keys only
    sql = httpx.post(store.api.url + "/v1/sql", json={"sql": "SELECT 1"}, timeout=30,
                     headers={"Authorization": f"Bearer {store.keys['acme']}"})
    assert sql.status_code == 403
    assert store.get("/v1/retention", "operator").status_code == 200


INJECTIONS = [
    "' OR 1=1 --", "acme' OR tenant = 'globex", "globex", "%", "\\", "\x00",
    "1; DROP TABLE events", "{tenant:String}", "🙂" * 200, "a" * 5000, "-1", "9999-99-99",
]


def test_injection_and_garbage_are_4xx_or_empty_never_500_or_leaks(store: Store):
    acme_run = store.runs("acme")[0]
    spec = store.get("/openapi.json", None).json()["paths"]
    seen = set()
    for path in ("/v1/events", "/v1/tools/health", "/v1/control/history", "/v1/margins",
                 "/v1/export", "/v1/control/state"):
        params = [p["name"] for p in spec[path]["get"]["parameters"] if p["in"] == "query"]
        assert params, path
        for param in params:
            for value in INJECTIONS:
                response = store.get(path, "acme", **{param: value})
                seen.add(response.status_code)
                assert response.status_code in (200, 400, 403, 404, 422), (
                    path, param, value, response.status_code, response.text[:300])
                assert "globex" not in response.text.replace(value, ""), (path, param, value)
                if response.status_code >= 400:
                    assert response.json()["detail"], (path, param)
    for value in INJECTIONS:
        for prefix in ("/v1/timeline/", "/v1/replay/", "/v1/verify/"):
            response = store.get(prefix + quote(value, safe=""), "acme")
            assert response.status_code in (400, 404, 422), (prefix, value, response.text)
    assert store.get(f"/v1/timeline/{acme_run}", "acme").status_code == 200
    assert {400, 422} & seen and 200 in seen
    # the store is intact after all of that
    count = store.get("/v1/events", "operator", limit=1).status_code
    assert count == 200
    assert store.client.command("SELECT count() FROM events") > 0


def test_openapi_fuzzing_finds_no_server_error_and_no_leak(store: Store):
    """Schemathesis against the served OpenAPI document, with a tenant key: every operation,
    a bounded number of generated requests each (positive and negative data)."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(store.api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {store.keys['acme']}"}
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    def fuzzer(strategy: Any) -> Any:
        @hypothesis_settings(max_examples=20, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            if "parquet" in response.headers.get("content-type", [""])[0]:
                import pyarrow.parquet as pq

                tenants = set(pq.read_table(io.BytesIO(response.content))["tenant"].to_pylist())
                assert tenants <= {"acme"}
                return
            assert '"tenant":"globex"' not in response.text
            assert "globex errors" not in response.text

        return fuzz

    for operation in operations:
        fuzzer(operation.as_strategy())()
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert set(statuses) == {op.label for op in operations}
