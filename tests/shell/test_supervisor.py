"""``agentledger up`` holds: readers wait for it, crash loops are reported and survived,
the broker comes back, and SIGTERM stops everything (children and broker) in bounded time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agentledger.core import discovery
from agentledger.core.settings import Settings
from tests.conftest import CLI
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


class Stack:
    """``agentledger up`` as a subprocess, with its output collected on a thread."""

    def __init__(self, data_dir: Path):
        self.settings = Settings(data_dir=data_dir)
        self.env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(data_dir),
                    "AGENTLEDGER_SINK_BATCH_SECONDS": "0.3",
                    "AGENTLEDGER_SINK_STATUS_SECONDS": "1",
                    "AGENTLEDGER_HEALTH_SILENT_SECONDS": "15", "PYTHONUNBUFFERED": "1"}
        self.env.pop("AGENTLEDGER_KAFKA_BOOTSTRAP", None)
        self.lines: list[str] = []
        self.process = subprocess.Popen([*CLI, "up"], env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def status(self) -> dict:
        return discovery.lookup(self.settings, discovery.SUPERVISOR_FILE) or {}

    def child_pid(self, name: str) -> int | None:
        for child in self.status().get("children", []):
            # a child that keeps being restarted runs while it is reported crash_looping
            if child["name"] == name and child["state"] in ("running", "crash_looping") \
                    and child["restart_in_s"] is None:
                return child["pid"]
        return None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def health(self) -> tuple[int, dict]:
        done = self.cli("health", "--json")
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            return done.returncode, {"stdout": done.stdout, "stderr": done.stderr}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_readers_wait_crash_loops_are_reported_and_the_broker_comes_back(tmp_path):
    stack = Stack(tmp_path / "data")
    readers: list[subprocess.CompletedProcess] = []
    try:
        # A reader in a loop from the first moment: it must wait for the stack's API,
        # never open the store itself (which would make the stack's sink fail to start).
        while not stack.said("agentledger is up"):
            assert stack.process.poll() is None, "".join(stack.lines)
            readers.append(stack.cli("sql", "SELECT 1", "--json"))
        assert all(r.returncode == 0 for r in readers), [r.stderr for r in readers]
        store = discovery.lookup(stack.settings, discovery.STORE_FILE)
        assert store and store["pid"] == stack.child_pid("sink")

        # Crash loop: the sink killed three times is restarted with backoff, and health says so.
        for _ in range(3):
            pid = wait_for(lambda: stack.child_pid("sink"), 60, what="a running sink")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: stack.child_pid("sink") not in (None, p), 60,
                     what="the sink restarted")
        wait_for(
            lambda: (r := stack.health())[0] == 2 and any(
                "sink: crash_looping" in p for p in r[1].get("problems", [])) and r, 60,
            what="health to report the crash-looping sink")
        assert stack.process.poll() is None, "a crash-looping child must not stop the stack"

        # The broker dies: it comes back on the same address, and new events land.
        bootstrap = discovery.lookup(stack.settings, discovery.BROKER_FILE)["bootstrap"]
        broker = next(p for p in _tree(stack.process.pid) if "tansu" in p.name())
        broker.kill()
        wait_for(lambda: stack.said("restarting it on"), 30, what="the broker restart")
        simulated = wait_for(lambda: (r := stack.cli("simulate", "--runs", "30", "--json"))
                             .returncode == 0 and json.loads(r.stdout.splitlines()[-1]), 120,
                             what="a simulation against the restarted broker")
        assert discovery.lookup(stack.settings, discovery.BROKER_FILE)["bootstrap"] == bootstrap
        wait_for(lambda: _landed(stack) >= simulated["events"], 120,
                 what="events produced after the broker restart to land")
        # The stream worker reconnected too: its heartbeats reach the new broker's topic.
        wait_for(lambda: _count(stack, "SELECT count() AS n FROM heartbeats WHERE component = "
                                "'streams' AND ts > now64(3) - INTERVAL 3 SECOND") > 0, 120,
                 what="a stream worker heartbeat after the broker restart")
        _code, report = stack.health()
        assert any("restarted" in p for p in report["problems"]), report["problems"]
    finally:
        stack.stop()
    assert stack.process.returncode == 0, "".join(stack.lines[-30:])


def _landed(stack: Stack) -> int:
    return _count(stack, "SELECT count() AS n FROM events FINAL")


def _count(stack: Stack, sql: str) -> int:
    done = stack.cli("sql", sql, "--json")
    if done.returncode != 0:
        return -1
    return json.loads(done.stdout)[0]["n"]


def test_sigterm_stops_the_stack_with_a_stuck_child_and_leaves_no_process(tmp_path):
    stack = Stack(tmp_path / "data")
    try:
        wait_for(lambda: stack.said("agentledger is up") or stack.process.poll() is not None,
                 120, what="the stack to start")
        assert stack.process.poll() is None, "".join(stack.lines)
        family = _tree(stack.process.pid)
        assert any("tansu" in p.name() for p in family)
        sink = stack.child_pid("sink")
        os.kill(sink, signal.SIGSTOP)  # stuck: it cannot answer SIGTERM
        started = time.monotonic()
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(30)
        took = time.monotonic() - started
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, f"left running: {[p.name() for p in alive]}"
    # The stopped sink could not answer SIGTERM: the supervisor escalated to SIGKILL
    # (its bound: 7 s for the children, 2 s for the broker) instead of waiting forever.
    assert stack.said("did not stop in time"), "".join(stack.lines[-20:])
    print(f"stack stopped {took:.1f}s after SIGTERM with a stopped sink", file=sys.stderr)
