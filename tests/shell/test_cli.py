"""The CLI as users run it: help everywhere, clear errors, queries while the store is owned."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from agentledger.core import discovery
from tests.conftest import CLI
from tests.helpers import wait_for

COMMANDS = ["up", "broker", "sink", "api", "simulate", "sql", "summary", "streams", "control",
            "safe-mode", "safe-mode set", "safe-mode clear", "search", "trace", "replay",
            "verify", "margins", "export", "health", "revenue set", "revenue show",
            "retention show", "keys create", "keys list"]


def run(args: list[str], env: dict | None = None, timeout: float = 120):
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def registered_commands() -> list[str]:
    """Every command and sub-command the CLI registers, so a new one cannot skip --help."""
    from agentledger.cli import app

    def name(command) -> str:
        return command.name or command.callback.__name__.replace("_", "-")

    found = [name(c) for c in app.registered_commands]
    for group in app.registered_groups:
        found.append(group.name)
        found += [f"{group.name} {name(c)}" for c in group.typer_instance.registered_commands]
    return found


def test_help_explains_every_command():
    from typer.testing import CliRunner

    top = run(["--help"])
    assert top.returncode == 0
    commands = registered_commands()
    assert set(COMMANDS) <= set(commands)
    runner = CliRunner()
    from agentledger.cli import app

    for command in commands:
        assert command.split()[0] in top.stdout, command
        sub = runner.invoke(app, [*command.split(), "--help"], terminal_width=100)
        assert sub.exit_code == 0 and "Usage" in sub.stdout, command
        assert len(sub.stdout.splitlines()) > 5, command


@pytest.mark.parametrize("statement", [
    "DROP TABLE events", "INSERT INTO events (seq) VALUES (1)",
    "SELECT 1; DROP TABLE events", "ALTER TABLE events DELETE WHERE 1",
])
def test_sql_refuses_writes_with_a_clear_error(statement, tmp_path):
    env = {"AGENTLEDGER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run(["sql", statement], env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr + result.stdout


def test_simulate_without_a_broker_says_what_to_do(tmp_path):
    result = run(["simulate", "--runs", "1"], env={"AGENTLEDGER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "agentledger up" in result.stderr and "Traceback" not in result.stderr


def test_invalid_settings_are_named(tmp_path):
    result = run(["summary"], env={"AGENTLEDGER_DATA_DIR": str(tmp_path),
                                   "AGENTLEDGER_CLICKHOUSE_DSN": "ftp://nope"})
    assert result.returncode == 1
    assert "AGENTLEDGER_CLICKHOUSE_DSN" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_simulate_and_query_while_the_sink_owns_the_store(settings, service_env):
    sink = subprocess.Popen([*CLI, "sink"], env=service_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: discovery.lookup(settings, discovery.STORE_FILE), 60,
                 what="the store API")
        sim = run(["simulate", "--runs", "25", "--seed", "5", "--json"], env=service_env)
        assert sim.returncode == 0, sim.stderr
        produced = json.loads(sim.stdout)
        assert produced["runs"] == 25 and produced["events"] > 25 * 4

        def landed() -> bool:
            q = run(["sql", "SELECT count() AS n FROM events FINAL", "--json"], env=service_env)
            assert q.returncode == 0, q.stderr
            return json.loads(q.stdout) == [{"n": produced["events"]}]

        wait_for(landed, 60, interval_s=0.5, what="simulated events in the store")
        bound = run(["sql", "SELECT count() AS n FROM events FINAL WHERE tenant = {t:String}",
                     "--param", "t=nobody' OR 1=1 --", "--json"], env=service_env)
        assert json.loads(bound.stdout) == [{"n": 0}]
        refused = run(["sql", "DROP TABLE events"], env=service_env)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        summary = run(["summary", "--json"], env=service_env)
        tables = json.loads(summary.stdout)
        assert sum(r["events"] for r in tables["events by type"]) == produced["events"]
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0
