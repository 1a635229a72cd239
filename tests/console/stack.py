"""The console's test stack: a real Tansu broker, the real sink into a real chdb store and
the ledger API (with the console) on a loopback port, and a real agent — the SDK's
ToolGuard in a thread — whose refund over 200 waits for two finance approvers.

Keys: ``agent`` (acme/refund-agent's own), ``ana`` and ``ben`` (acme finance approvers),
``bot`` (a finance key that acts for acme/refund-agent: it may never approve its
requests), ``carol`` and ``lee`` (acme, legal queue), ``globex`` (globex's finance approver).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.approval_follower import ApprovalFollower
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.enforce import ApprovalExpired, ToolGuard
from agentledger.producers.gate import Gate
from agentledger.services import ApiServer, start_api
from tests.helpers import wait_for
from tests.sinkutil import SinkThread


@dataclass
class ConsoleStack:
    settings: Settings
    sink: SinkThread
    api: ApiServer
    keys: dict[str, str]
    follower: ApprovalFollower
    agents: list[RefundAgent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url

    def call(self, method: str, path: str, key: str, **kw: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=60,  # type: ignore[arg-type]
                             headers={"Authorization": f"Bearer {self.keys[key]}"}, **kw)

    def query(self, sql: str, **params: object) -> list[tuple]:
        return self.sink.query(sql, **params)

    def refund(self, amount: int, tenant: str = "acme", wait_s: float = 120) -> RefundAgent:
        """Start an agent whose refund needs approval; returns once its run has begun."""
        ledger = Ledger.connect(self.settings.kafka_bootstrap or "", AgentIdentity(
            tenant=tenant, agent="refund-agent", agent_version="1",
            principal="svc-refund-agent"))
        agent = RefundAgent(ledger, ToolGuard(Gate.load(), approvals=self.follower), amount,
                            wait_s)
        agent.start()
        assert agent.started_run.wait(30), "the agent's run did not start"
        self.agents.append(agent)
        return agent

    def landed(self, run_id: str, n: int) -> None:
        wait_for(lambda: self.query("SELECT count() FROM events FINAL WHERE run_id = "
                                    "{r:String}", r=run_id)[0][0] >= n, 60,
                 what=f"{n} events of {run_id} in the store")


def pending_for(stack: ConsoleStack, run_id: str) -> dict[str, Any] | None:
    """The pending request of ``run_id`` as ``GET /v1/approvals`` lists it to ana."""
    found = stack.call("GET", "/v1/approvals?status=pending", "ana").json()["approvals"]
    return next((a for a in found if a["run_id"] == run_id), None)


class RefundAgent(threading.Thread):
    """One refund through the SDK's gate, waiting on the approvals topic."""

    def __init__(self, ledger: Ledger, guard: ToolGuard, amount: int, wait_s: float):
        super().__init__(daemon=True)
        self.ledger, self.guard, self.amount, self.wait_s = ledger, guard, amount, wait_s
        self.run_id: str | None = None
        self.outcome: str | None = None
        self.error: BaseException | None = None
        self.started_run = threading.Event()
        self.proceeded = threading.Event()

    def run(self) -> None:
        try:
            with self.ledger.run("refund_with_approval") as run:
                self.run_id = run.run_id
                self.started_run.set()
                with self.guard.call(run, "stripe", "create_refund", mode="write",
                                     args={"id": "ch_1", "amount": self.amount},
                                     idempotency_key=f"ch_1:refund:{run.run_id}",
                                     wait_s=self.wait_s) as call:
                    self.proceeded.set()
                    call.result("ok", side_effect={"resource": "ch_1", "op": "refund"})
            self.outcome = run.outcome
        except ApprovalExpired as exc:
            self.outcome = exc.outcome
        except BaseException as exc:
            self.error = exc
        finally:
            self.started_run.set()
            self.ledger.flush(10)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def console_stack(data: Path) -> Iterator[ConsoleStack]:
    """The stack for one test package (everything shared: it takes seconds to start)."""
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.3, gate_stale_after_s=3600.0)
        with _env(AGENTLEDGER_KAFKA_BOOTSTRAP=broker.bootstrap,
                  AGENTLEDGER_DATA_DIR=str(settings.data_dir),
                  AGENTLEDGER_LEDGER_KEY_DIR=str(signing.key_dir(settings))):
            signing.ledger_key(settings)  # the key the API signs votes with, made once
            names = ("agent", "ana", "ben", "bot", "carol", "lee", "globex")
            keys = {n: new_key() for n in names}
            ring = KeyRing([
                entry_for("refund-agent@acme", keys["agent"], ["acme"],
                          agents=["refund-agent"]),
                entry_for("ana@finance", keys["ana"], ["acme"], roles=["finance"]),
                entry_for("ben@finance", keys["ben"], ["acme"], roles=["finance"]),
                entry_for("refund-agent-ops", keys["bot"], ["acme"], roles=["finance"],
                          agents=["acme/refund-agent"]),
                entry_for("carol@legal", keys["carol"], ["acme"], roles=["legal"]),
                entry_for("lee@legal", keys["lee"], ["acme"], roles=["legal"]),
                entry_for("gil@globex", keys["globex"], ["globex"], roles=["finance"]),
            ])
            with SinkThread(settings) as sink, ApprovalFollower(broker.bootstrap) as follower:
                api = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1",
                                port=0)
                stack = ConsoleStack(settings, sink, api, keys, follower)
                try:
                    yield stack
                finally:
                    for agent in stack.agents:
                        agent.join(5)
                    desk = getattr(api.server.config.app.state, "approvals", None)
                    if desk is not None:
                        desk.close()
                    api.stop()
