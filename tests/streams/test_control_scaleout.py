"""Two stream workers in one group: they split the partitions and the state, and when one
is killed with kill -9 the survivor takes over its partitions with their breakers as they
were (OPEN stays OPEN; the next transition has the next version; none is announced twice).

Real broker, two real `agentledger streams` processes, the real SDK.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.scenarios import OUTAGE_TOOL, SimClock
from agentledger.schemas.signals import HALF_OPEN, OPEN
from agentledger.streams.control_policy import load_policy
from tests.helpers import wait_for
from tests.streamutil import StreamWorker, control_records, outage_calls

pytestmark = pytest.mark.integration
# two tenants on each of the 3 facts partitions (keyed by tenant, murmur2 as in Kafka), so
# whichever way the group splits them, both workers decide some
TENANTS = [f"tenant-{i}" for i in (0, 6, 8, 9, 1, 2)]
POLICY = load_policy()


def _open_on(follower: ControlFollower, worker: StreamWorker) -> int:
    beat = follower.heartbeats.get(worker.worker_scope)
    return int(beat.details.get("breakers_open", 0)) if beat else 0


def test_killed_workers_open_breakers_stay_open_on_the_survivor(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    t0 = datetime.now(UTC)
    clock = SimClock(t0)
    keys = {f"breaker:{t}/*/{OUTAGE_TOOL}" for t in TENANTS}
    ledgers = [Ledger.connect(bootstrap, AgentIdentity(
        tenant=t, agent="crm-agent", agent_version="1", principal="svc"), clock=clock)
        for t in TENANTS]
    workers = [StreamWorker(service_env, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        with ControlFollower(bootstrap) as follower:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.wait_ready(follower)
            for ledger in ledgers:
                outage_calls(ledger, clock, t0, 25)
            wait_for(lambda: all((s := follower.state.get(k)) and s.state == OPEN
                                 for k in keys), 90, what="every tenant's breaker to open")
            wait_for(lambda: sum(_open_on(follower, w) for w in workers) == len(TENANTS), 30,
                     what="the workers to report every breaker open between them")
            split = [_open_on(follower, w) for w in workers]
            assert all(split), f"the two workers did not split the tenants: {split}"

            victim = max(workers, key=lambda w: _open_on(follower, w))
            survivor = next(w for w in workers if w is not victim)
            assert _open_on(follower, victim) > 0
            victim.kill9()

            # inside the OPEN wait: more failures change nothing, wherever they are decided
            for ledger in ledgers:
                outage_calls(ledger, clock, t0 + timedelta(seconds=10), 5)
            wait_for(lambda: _open_on(follower, survivor) == len(TENANTS), 90,
                     what="the survivor to own every breaker, all still OPEN")
            # past wait_s: each restored breaker moves on from where it was
            for ledger in ledgers:
                outage_calls(ledger, clock, t0 + timedelta(seconds=POLICY.breaker.wait_s + 15), 1,
                      "ok")
            wait_for(lambda: all(follower.state[k].state == HALF_OPEN for k in keys), 60,
                     what="HALF_OPEN after the wait, for every tenant")
            history = control_records(bootstrap, lambda s: s.key in keys)
            for key in keys:
                assert [(s.version, s.state) for s in history if s.key == key] == \
                    [(1, OPEN), (2, HALF_OPEN)], key
    finally:
        for worker in workers:
            worker.stop()
        for ledger in ledgers:
            ledger.close()
