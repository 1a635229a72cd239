"""``agentledger up``: the embedded stack in the foreground, supervised.

Order of start: broker → topics → store service (sink + API, a child process that owns
the chdb store) → stream worker (the control loop). Order of stop, on Ctrl-C/SIGTERM:
stream worker, then store service (it flushes and commits, landing the last signals),
then the broker. A child that crashes is restarted — it resumes from its committed
offsets and, for the stream worker, its changelog-backed state — up to ``max_restarts``
times in a minute. The control policy is validated before anything starts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentledger import discovery
from agentledger.broker import EmbeddedBroker
from agentledger.kafka import client_config, default_topics, ensure_topics
from agentledger.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                        start_new_session=True)

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("child did not stop in time; killing", extra={"child": self.name})
            self.process.kill()
            self.process.wait()


class Supervisor:
    def __init__(self, settings: Settings, *, max_restarts: int = 5,
                 say: Callable[[str], None] = print):
        self.settings = settings
        self.max_restarts = max_restarts
        self.say = say
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _service(self, name: str, bootstrap: str, *args: str) -> Child:
        env = dict(os.environ, AGENTLEDGER_KAFKA_BOOTSTRAP=bootstrap,
                   AGENTLEDGER_DATA_DIR=str(self.settings.data_dir.resolve()))
        return Child(name, [sys.executable, "-m", "agentledger", name, *args], env)

    def run(self, ready_timeout_s: float = 60) -> int:
        from streams.policy import load_policy

        settings = self.settings
        policy = load_policy(settings.policy_file)  # refuse a broken policy up front
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            self.broker = EmbeddedBroker(settings.broker_port,
                                         log_file=settings.run_dir / "broker.log").start()
            bootstrap = self.broker.bootstrap
            discovery.publish(settings, discovery.BROKER_FILE, {"bootstrap": bootstrap})
        try:
            ensure_topics(client_config(bootstrap, "admin", extra=settings.kafka_security),
                          default_topics(settings.events_partitions))
            self.children = [self._service("sink", bootstrap),
                             self._service("streams", bootstrap)]
            for child in self.children:
                child.start()
            store = self._wait_for_store(ready_timeout_s)
            self.say(f"kafka bootstrap: {bootstrap}")
            self.say(f"clickhouse dsn:  {settings.dsn_for_display}")
            self.say(f"control policy:  {settings.policy_file or 'packaged default'} "
                     f"(version {policy.version})")
            if store:
                self.say(f"ledger api:      {store['api_url']} "
                         f"(operator key in {settings.run_dir / 'api.key'})")
            self.say("agentledger is up; Ctrl-C stops it")
            return self._watch()
        finally:
            for child in reversed(self.children):
                child.stop()
            if self.broker:
                discovery.withdraw(settings, discovery.BROKER_FILE)
                self.broker.stop()

    def _wait_for_store(self, timeout_s: float) -> dict | None:
        if not self.settings.embedded_store:
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            info = discovery.lookup(self.settings, discovery.STORE_FILE)
            if info:
                return info
            for child in self.children:
                if child.process and child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with code "
                                       f"{child.process.returncode} while starting")
            time.sleep(0.1)
        if self._stop.is_set():
            return None
        raise TimeoutError(f"the store service did not come up within {timeout_s}s")

    def _watch(self) -> int:
        while not self._stop.wait(0.5):
            if self.broker and self.broker.process and self.broker.process.poll() is not None:
                self.say("the embedded broker exited; stopping (its data was in memory)")
                return 1
            for child in self.children:
                if child.process and child.process.poll() is not None:
                    now = time.monotonic()
                    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                    if len(child.restarts) > self.max_restarts:
                        self.say(f"{child.name} keeps exiting "
                                 f"(code {child.process.returncode}); stopping")
                        return 1
                    log.warning("restarting child", extra={
                        "child": child.name, "code": child.process.returncode})
                    child.start()
        return 0
