"""``agentledger up``: the embedded stack in the foreground, supervised.

Order of start: broker → topics → store service (sink + API, a child process that owns
the chdb store) → stream worker (the control loop) → OTLP intake (spans from the
OpenTelemetry Collector's Kafka exporter) → webhook sender (``agentledger notify``,
docs/notifications.md). While it starts, ``<run_dir>/
supervisor.json`` says so, and readers (the CLI) wait for the store service instead of
opening the store themselves (see :func:`agentledger.api_client.open_ledger`).

What the supervisor promises:

- **Stop in bounded time.** On Ctrl-C/SIGTERM: the stream worker first (its last signals
  can still land), then the store service (it flushes and commits); a child still alive
  at ``stop_timeout_s`` gets SIGKILL, and the broker goes last. Children and the broker
  get SIGKILL from the kernel if the supervisor itself dies (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of ``up`` leaves no orphans holding ports or the store.
- **Crash loops do not take the stack down.** A child that exits is restarted with
  exponential backoff (1 s, 2 s, … up to 60 s); a child that restarted
  ``CRASH_LOOP_RESTARTS`` times within ``CRASH_LOOP_WINDOW_S`` is reported as
  ``crash_looping`` in ``supervisor.json``, which ``health`` reads.
- **The broker comes back.** The embedded broker keeps data in memory; if it dies it is
  restarted on the same port with the topics re-created. Clients reconnect on their own
  and start the new, empty topics from the beginning; ``health`` shows the restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings

log = logging.getLogger(__name__)

SUPERVISOR_FILE = discovery.SUPERVISOR_FILE
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_S = 300.0
MAX_BACKOFF_S = 60.0


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    last_exit: int | None = None
    next_start: float | None = None
    """monotonic time of the next restart while backing off, else None"""

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                        start_new_session=True,
                                        preexec_fn=die_with_parent(signal.SIGKILL))
        self.next_start = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_until(self, deadline: float) -> bool:
        """Wait for the child to exit until ``deadline`` (monotonic); True if it did."""
        if self.process is None:
            return True
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            log.warning("child did not stop in time; killing", extra={"child": self.name})
            self.process.kill()
            self.process.wait()

    def recent_restarts(self, now: float) -> int:
        return sum(1 for t in self.restarts if now - t < CRASH_LOOP_WINDOW_S)

    def state(self, now: float) -> str:
        if self.next_start is not None:
            return ("crash_looping" if self.recent_restarts(now) >= CRASH_LOOP_RESTARTS
                    else "restarting")
        if not self.alive:
            return "stopped"
        return "crash_looping" if self.recent_restarts(now) >= CRASH_LOOP_RESTARTS else "running"


class Supervisor:
    def __init__(self, settings: Settings, *, stop_timeout_s: float = 7.0,
                 say: Callable[[str], None] = print):
        self.settings = settings
        self.stop_timeout_s = stop_timeout_s
        self.say = say
        self.broker: EmbeddedBroker | None = None
        self.broker_restarts: list[float] = []
        self.children: list[Child] = []
        self.state = "starting"
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _service(self, name: str, bootstrap: str, *args: str) -> Child:
        env = dict(os.environ, AGENTLEDGER_KAFKA_BOOTSTRAP=bootstrap,
                   AGENTLEDGER_DATA_DIR=str(self.settings.data_dir.resolve()))
        return Child(name, [sys.executable, "-m", "agentledger", name, *args], env)

    def run(self, ready_timeout_s: float = 60) -> int:
        from agentledger.streams.control_policy import load_policy

        settings = self.settings
        policy = load_policy(settings.policy_file)  # refuse a broken policy up front
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        self._publish()
        bootstrap = settings.kafka_bootstrap
        try:
            if not bootstrap:
                self.broker = EmbeddedBroker(settings.broker_port,
                                             log_file=settings.run_dir / "broker.log",
                                             preexec_fn=die_with_parent(signal.SIGKILL))
                bootstrap = self.broker.start().bootstrap
                discovery.publish(settings, discovery.BROKER_FILE, {"bootstrap": bootstrap})
            self._ensure_topics(bootstrap)
            self.children = [self._service("sink", bootstrap),
                             self._service("streams", bootstrap),
                             self._service("intake", bootstrap),
                             self._service("notify", bootstrap)]  # webhooks
            for child in self.children:
                child.start()
            self._publish()
            store = self._wait_for_store(ready_timeout_s)
            self.say(f"kafka bootstrap: {bootstrap}")
            self.say(f"clickhouse dsn:  {settings.dsn_for_display}")
            self.say(f"control policy:  {settings.policy_file or 'packaged default'} "
                     f"(version {policy.version})")
            if store:
                self.say(f"ledger api:      {store['api_url']} "
                         f"(operator key in {settings.run_dir / 'api.key'})")
                self.say(f"web console:     {store['api_url']}/console "
                         "(sign in with an API key)")
            intake = self._wait_for(discovery.INTAKE_FILE, 10)
            if intake:
                self.say(f"otlp/http:       {intake['otlp_http_url']}/v1/traces "
                         "(OTLP exporters; API keys as for the ledger API)")
            self.say("agentledger is up; Ctrl-C stops it")
            self.state = "up"
            self._publish()
            return self._watch()
        finally:
            self.state = "stopping"
            self._publish()
            self._stop_children()
            if self.broker:
                discovery.withdraw(settings, discovery.BROKER_FILE)
                self.broker.stop(timeout_s=2)
            discovery.withdraw(settings, SUPERVISOR_FILE)

    def _ensure_topics(self, bootstrap: str) -> None:
        ensure_topics(client_config(bootstrap, "admin", extra=self.settings.kafka_security),
                      default_topics(self.settings.events_partitions))

    def _stop_children(self) -> None:
        """Producers of signals and events first, then the store service that lands them;
        SIGKILL whatever is left at the deadline."""
        deadline = time.monotonic() + self.stop_timeout_s
        store = [c for c in self.children if c.name == "sink"]
        others = [c for c in self.children if c.name != "sink"]
        for group, until in ((others, time.monotonic() + self.stop_timeout_s / 2),
                             (store, deadline)):
            for child in group:
                child.next_start = None
                child.terminate()
            for child in group:
                child.wait_until(min(deadline, until))
        for child in self.children:
            if not child.wait_until(deadline):
                child.kill()

    def _wait_for_store(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.settings.embedded_store:
            return None
        info = self._wait_for(discovery.STORE_FILE, timeout_s)
        if info is None and not self._stop.is_set():
            raise TimeoutError(f"the store service did not come up within {timeout_s}s")
        return info

    def _wait_for(self, name: str, timeout_s: float) -> dict[str, Any] | None:
        """What a child published under ``name``, once it did; None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            info = discovery.lookup(self.settings, name)
            if info:
                return info
            self._restart_exited()
            time.sleep(0.1)  # polling the file; a child's exit is handled above
        return None

    def _watch(self) -> int:
        published = time.monotonic()
        while not self._stop.wait(0.5):
            if self.broker and not self.broker.alive:
                self._restart_broker()
            self._restart_exited()
            if time.monotonic() - published > 2:  # states age (crash loops expire)
                self._publish()
                published = time.monotonic()
        return 0

    def _restart_exited(self) -> None:
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.next_start is not None:
                if now >= child.next_start and not self._stop.is_set():
                    log.warning("restarting child", extra={"child": child.name})
                    child.start()
                    changed = True
                continue
            if child.process is not None and child.process.poll() is not None:
                child.last_exit = child.process.returncode
                backoff = min(MAX_BACKOFF_S, 2.0 ** min(child.recent_restarts(now), 6))
                child.restarts.append(now)
                child.next_start = now + backoff
                self.say(f"{child.name} exited with code {child.last_exit}; "
                         f"restarting in {backoff:.0f}s")
                changed = True
        if changed:
            self._publish()

    def _restart_broker(self) -> None:
        assert self.broker is not None
        self.broker_restarts.append(time.monotonic())
        self.say(f"the embedded broker exited; restarting it on {self.broker.bootstrap} "
                 "(its topics were in memory: they start empty)")
        try:
            self.broker.start()
            self._ensure_topics(self.broker.bootstrap)
        except Exception as exc:  # try again on the next watch tick
            log.error("broker restart failed", extra={"error": str(exc)})
        self._publish()

    def status(self) -> dict[str, Any]:
        """What ``supervisor.json`` holds: the stack's state and each child's."""
        now = time.monotonic()
        children = [{
            "name": c.name, "pid": c.process.pid if c.process else None,
            "state": c.state(now), "restarts_recent": c.recent_restarts(now),
            "restarts_total": len(c.restarts), "last_exit": c.last_exit,
            "restart_in_s": round(c.next_start - now, 1) if c.next_start else None,
        } for c in self.children]
        broker = None
        if self.broker is not None:
            broker = {"bootstrap": self.broker.bootstrap, "alive": self.broker.alive,
                      "restarts_total": len(self.broker_restarts),
                      "last_restart_ago_s": round(now - self.broker_restarts[-1], 1)
                      if self.broker_restarts else None}
        return {"state": self.state, "updated_at": time.time(), "children": children,
                "broker": broker}

    def _publish(self) -> None:
        discovery.publish(self.settings, SUPERVISOR_FILE, self.status())


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The running supervisor's ``supervisor.json``, None if no supervisor is alive."""
    return discovery.lookup(settings, SUPERVISOR_FILE)


def stack_starting_or_up(settings: Settings) -> bool:
    """True while a supervisor lives: readers must then never take the store themselves."""
    return read_status(settings) is not None

