"""A real stream worker (``agentledger streams``) as a child process, for tests."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from agentledger.producers.emitter import Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.scenarios import OUTAGE_TOOL, SimClock
from agentledger.schemas.signals import ControlSignal
from tests.conftest import CLI
from tests.helpers import wait_for


class StreamWorker:
    def __init__(self, env: dict[str, str], log_path: Path, *args: str):
        self.env = {**env, "AGENTLEDGER_STREAMS_HEARTBEAT_SECONDS": "0.5"}
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> StreamWorker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([*CLI, "streams", *self.args], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        return self

    @property
    def worker_scope(self) -> str:
        assert self.proc is not None
        return f"worker/{socket.gethostname()}-{self.proc.pid}"

    def wait_ready(self, follower: ControlFollower, timeout_s: float = 90) -> None:
        """Until this process's first heartbeat is on the control topic."""
        wait_for(lambda: self.worker_scope in follower.heartbeats or self._died(), timeout_s,
                 what="the stream worker's first heartbeat")
        assert not self._died(), self.log_path.read_text()[-3000:]

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> StreamWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control_records(bootstrap: str,
                    keep: Callable[[ControlSignal], bool] = lambda s: s.kind != "heartbeat",
                    ) -> list[ControlSignal]:
    """Every record on agent.control so far that ``keep`` selects, in offset order, read
    by a fresh follower."""
    fresh = ControlFollower(bootstrap)
    seen: list[ControlSignal] = []
    original = fresh.apply_record

    def apply_all(key: bytes | None, value: bytes | None) -> bool:
        if value is not None:
            record = ControlSignal.from_json(value)
            if keep(record):
                seen.append(record)
        return original(key, value)

    fresh.apply_record = apply_all  # type: ignore[method-assign]
    with fresh:
        # the worker heartbeats every 0.5 s: once a beat newer than now arrives, all
        # earlier records on the single control partition have been read
        wait_for(lambda: fresh.heartbeats and fresh.silent_for < 1, 30,
                 what="a heartbeat on the fresh reader")
    return seen


def outage_calls(ledger: Ledger, clock: SimClock, at: datetime, n: int,
                 status: str = "error") -> None:
    """``n`` runs of ``ledger``, each one call to the outage tool with ``status``, 200 ms
    apart in event time from ``at``; flushed."""
    for i in range(n):
        clock.set(at + timedelta(milliseconds=200 * i))
        with ledger.run("crm_update") as run, run.tool_call(
                OUTAGE_TOOL, "get_account", mode="read", args={"id": i}) as call:
            call.result(status, error_type="HTTP500" if status == "error" else None,
                        latency_ms=30.0)
    ledger.flush()
