"""Issue 21, findings 1 and 2: ``POST /v1/sql`` reads the ledger and nothing else.

One real chdb store and one real API per module; each test does the attack as the issue
describes it and asserts it fails with a 400 naming the reason (never a 500), and that
its side effect did not happen (no file written, no URL fetched, no row inserted).
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentledger.core import discovery
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.queries.sql import SUMMARY_QUERIES
from agentledger.services import ApiServer, open_store, start_api
from tests.conftest import CLI

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass
class Api:
    settings: Settings
    server: ApiServer
    operator: str
    client: Any

    def sql(self, statement: str, **extra: Any) -> httpx.Response:
        return httpx.post(self.server.url + "/v1/sql", json={"sql": statement, **extra},
                          headers={"Authorization": f"Bearer {self.operator}"}, timeout=60)

    def refused(self, statement: str, reason: str, **extra: Any) -> str:
        """Assert a 400 whose detail contains ``reason``; the detail."""
        response = self.sql(statement, **extra)
        assert response.status_code == 400, (statement, response.status_code, response.text)
        detail: str = response.json()["detail"]
        assert reason.lower() in detail.lower(), (statement, detail)
        assert "Traceback" not in detail
        return detail

    def count_events(self) -> int:
        return int(self.client.query("SELECT count() FROM events").result_rows[0][0])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("sqlguard") / "data")
    client = open_store(settings)
    server = start_api(settings, client_for(settings))  # mints the operator key
    discovery.publish(settings, discovery.STORE_FILE, {"api_url": server.url})
    try:
        yield Api(settings, server, (settings.run_dir / "api.key").read_text().strip(),
                  client)
    finally:
        discovery.withdraw(settings, discovery.STORE_FILE)
        server.stop()
        client.close()


def test_into_outfile_is_refused_and_writes_nothing(api: Api, tmp_path: Path) -> None:
    target = tmp_path / "sitecustomize.pth"
    api.refused(f"SELECT 'import os' INTO OUTFILE '{target}'", "INTO OUTFILE")
    api.refused(f"SELECT 1 INTO OUTFILE '{target}' AND STDOUT", "INTO OUTFILE")
    api.refused(f"SHOW TABLES INTO OUTFILE '{target}'", "INTO OUTFILE")
    assert not target.exists()


def test_the_api_key_file_cannot_be_read(api: Api) -> None:
    path = api.settings.run_dir / "api.key"
    for statement in (f"SELECT * FROM file('{path}', 'LineAsString')",
                      f"SELECT file('{path}')",
                      f"SELECT * FROM (SELECT * FROM file('{path}', 'LineAsString'))",
                      f"DESCRIBE file('{path}', 'LineAsString')"):
        detail = api.refused(statement, "file()")
        assert api.operator not in detail


def test_proc_environ_cannot_be_read(api: Api) -> None:
    api.refused("SELECT * FROM file('/proc/self/environ', 'RawBLOB')", "file()")
    api.refused("SELECT line FROM file('/proc/self/environ', 'LineAsString') AS f "
                "WHERE line != ''", "file()")


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib names it so
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"1\n")

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_refused_and_fetches_nothing(api: Api, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    api.refused(f"SELECT * FROM url('{url}/x', 'LineAsString')", "url()")
    # The hang: a url() back to the API itself.
    api.refused(f"SELECT * FROM url('{api.server.url}/v1/health', 'LineAsString')", "url()")
    api.refused(f"SELECT * FROM urlCluster('default', '{url}/y', 'LineAsString')",
                "urlcluster()")
    assert hits == [], f"the store fetched {hits}"
    assert api.sql("SELECT 1 AS one").json()["rows"] == [[1]]  # still answering


@pytest.mark.parametrize("statement", [
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'CSV')",
    "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM jdbc('x', 'y')",
    "SELECT * FROM odbc('x', 'y', 'z')",
    "SELECT * FROM input('x String')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:1', 'c', 'b', 'CSV')",
    "SELECT * FROM merge('system', '.*')",
    "SELECT * FROM view(SELECT 1)",
    "SELECT dictGet('d', 'a', toUInt64(1))",
    "SELECT joinGet('t', 'a', 1)",
    "SELECT sleep(3)",
])
def test_table_functions_and_readers_outside_are_refused(api: Api, statement: str) -> None:
    api.refused(statement, "not allowed")


def test_a_settings_clause_cannot_lift_the_row_cap(api: Api) -> None:
    api.refused("SELECT number FROM numbers(100000) SETTINGS max_result_rows = 0", "SETTINGS")
    api.refused("SELECT * FROM (SELECT number FROM numbers(100000) "
                "SETTINGS max_result_rows = 0)", "SETTINGS")
    api.refused("EXPLAIN json = 1 SELECT 1", "SETTINGS")
    # And the cap applies to what is allowed: 20 rows asked, 10 allowed.
    over = api.sql("SELECT number FROM numbers(20)", max_rows=10)
    assert over.status_code == 400 and "limit for result exceeded" in over.text.lower()
    assert len(api.sql("SELECT number FROM numbers(10)", max_rows=10).json()["rows"]) == 10


def test_system_tables_beyond_the_allowed_few_are_refused(api: Api) -> None:
    for table in ("users", "grants", "settings", "query_log", "processes", "disks",
                  "build_options", "macros"):
        api.refused(f"SELECT * FROM system.{table}", f"system.{table}")
    api.refused("SELECT name FROM `system`.`users`", "system.users")
    api.refused("SELECT 1 WHERE 'x' IN system.users", "system.users")
    api.refused("SHOW CREATE TABLE system.users", "system.users")
    api.refused("SELECT * FROM information_schema.tables", "information_schema")
    api.refused("SELECT * FROM {t:Identifier}", "system.users", parameters={"t": "system.users"})
    api.refused("SHOW PROCESSLIST", "only read-only")
    tables = api.sql("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert tables.status_code == 200 and ["events"] in tables.json()["rows"]


@pytest.mark.parametrize("statement", [
    "SELECT 1; INSERT INTO events (seq) VALUES (1)",
    "SELECT 1; DROP TABLE events",
    "SELECT ';'; TRUNCATE TABLE events",
    "SELECT 1 -- comment\n; DROP TABLE events",
])
def test_more_than_one_statement_is_refused_and_none_runs(api: Api, statement: str) -> None:
    before = api.count_events()
    api.refused(statement, "one statement")
    assert api.count_events() == before
    assert api.sql("EXISTS TABLE events").json()["rows"] == [[1]]


@pytest.mark.parametrize("statement", [
    "INSERT INTO events (seq) VALUES (1)", "DROP TABLE events", "CREATE TABLE x (a Int8) "
    "ENGINE = Memory", "CREATE TEMPORARY TABLE x (a Int8)", "ALTER TABLE events DELETE WHERE 1",
    "SET max_result_rows = 0", "KILL QUERY WHERE 1", "SYSTEM SHUTDOWN", "GRANT ALL ON *.* TO x",
])
def test_writes_and_admin_statements_are_refused(api: Api, statement: str) -> None:
    api.refused(statement, "only read-only")


def test_a_format_clause_is_refused_not_a_500(api: Api) -> None:
    api.refused("SELECT 1 FORMAT JSON", "FORMAT")
    api.refused("SELEC 1", "does not parse")


def _readme_sql() -> list[str]:
    """Every ``agentledger sql "…"`` example in the README, as a reader would paste it."""
    found = re.findall(r'agentledger sql "(.*?)"', README.read_text(), re.S)
    return [re.sub(r"\s+", " ", s) for s in found]


def test_readme_examples_and_summary_queries_still_run(api: Api) -> None:
    examples = _readme_sql()
    assert len(examples) >= 3, examples
    for statement in examples:
        params = {"r": "0193"} if "{r:String}" in statement else None
        response = api.sql(statement, parameters=params)
        assert response.status_code == 200, (statement, response.text)
    for statement in [*SUMMARY_QUERIES.values(), "SHOW TABLES", "DESCRIBE TABLE events",
                      "EXPLAIN SELECT count() FROM events", "WITH 1 AS x SELECT x",
                      "SELECT count() FROM numbers(5)", "SELECT 'a;b' AS s -- trailing",
                      "SELECT name FROM system.columns WHERE table = 'events' LIMIT 1",
                      "SELECT 1;"]:
        response = api.sql(statement)
        assert response.status_code == 200, (statement, response.text)


def test_the_cli_shows_the_reason_and_exits_non_zero(api: Api) -> None:
    env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(api.settings.data_dir),
           "AGENTLEDGER_API_KEY": api.operator}
    result = subprocess.run(
        [*CLI, "sql", f"SELECT * FROM file('{api.settings.run_dir / 'api.key'}')"],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "file()" in result.stderr and "not allowed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert api.operator not in result.stdout + result.stderr
