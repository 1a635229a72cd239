"""The canary in the control loop, live: a real broker, a real stream worker, the real sink
into chdb and the real API. A baseline version and a candidate whose success rate is 20
points lower run side by side (one candidate run in five, as a canary gets a share of the
traffic); the worker's mSPRT degrades the candidate's version scope within 300 of its
runs, the guard of that version refuses writes while the baseline's does not, ``control
explain`` names the numbers, and ``control backtest`` replays the same decision.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from agentledger.api_client import LedgerClient
from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.cli.control import run_backtest
from agentledger.core.settings import Settings
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.guard import ControlFollower, SafeModeGuard
from agentledger.schemas.signals import READ_ONLY, control_key, version_scope
from agentledger.services import start_api
from agentledger.streams.control_policy import load_policy
from tests.helpers import wait_for
from tests.sinkutil import SinkThread
from tests.streamutil import StreamWorker

pytestmark = pytest.mark.integration
BOUND = 300  # the goal: degraded within 300 of the candidate's runs


KEY = control_key("safe_mode", version_scope("acme", "triage-bot", "1.4.2"), "canary")


def _runs(base: Ledger, cand: Ledger, rng: random.Random, n: int, *,
          stop: Callable[[], bool] = lambda: False) -> None:
    """``n`` runs, one candidate run (70 % success) in five beside the baseline's (90 %),
    flushed every 25 candidate runs; stops early once ``stop()``."""
    for i in range(n):
        is_cand = i % 5 == 4
        with (cand if is_cand else base).run("ticket_triage", inputs={"n": i}) as run:
            run.finish("success" if rng.random() < (0.7 if is_cand else 0.9) else "failure")
        if is_cand and (i // 5 + 1) % 25 == 0:
            cand.flush()
            base.flush()
            if stop():
                break
    cand.flush()
    base.flush()


def test_the_canary_degrades_a_bad_version_live_and_explain_names_the_numbers(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    rng = random.Random(7)

    def ledger(version: str) -> Ledger:
        return Ledger.connect(bootstrap, AgentIdentity("acme", "triage-bot", version, "svc"))

    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower, SinkThread(settings) as sink, \
            ledger("1.4.1") as base, ledger("1.4.2") as cand:
        worker.wait_ready(follower)
        bad = SafeModeGuard(follower, "acme", "triage-bot", agent_version="1.4.2",
                            stale_after_s=3600)
        good = SafeModeGuard(follower, "acme", "triage-bot", agent_version="1.4.1",
                             stale_after_s=3600)
        assert bad.decide("crm", "write").allowed
        # the baseline is live first: the candidate's baseline is the version with the
        # most runs when the candidate appears
        for n in range(150):
            last = base.clock().timestamp()  # the last run finishes after this
            with base.run("ticket_triage", inputs={"n": n}) as run:
                run.finish("success" if rng.random() < 0.9 else "failure")
        base.flush()
        wait_for(lambda: follower.event_time >= last, 60, what="the baseline's runs decided")
        # stop at the bound: the assertions below say whether it was enough
        _runs(base, cand, rng, 5 * BOUND, stop=lambda: KEY in follower.state)
        wait_for(lambda: KEY in follower.state, 90,
                 what=f"the canary degrading 1.4.2 (worker log {worker.log_path}; control "
                      f"state {sorted(follower.state)}, heartbeats "
                      f"{[h.details for h in follower.heartbeats.values()]})")
        # a little more traffic: the backtest replays in event-time order, not the
        # worker's arrival order, and must reach the same conclusion
        _runs(base, cand, rng, 250)
        signal = follower.state[KEY]
        assert signal.state == READ_ONLY and signal.rule == "canary"
        assert signal.details["candidate_runs"] <= BOUND
        assert signal.details["baseline_version"] == "1.4.1"
        assert signal.details["likelihood_ratio"] >= 1 / signal.details["alpha"]
        assert signal.details["candidate_success"] < signal.details["baseline_success"]
        # the guard obeys it for that version only
        refused = bad.decide("crm", "write")
        assert not refused.allowed and refused.rule == "safe_mode_read_only"
        assert bad.decide("crm", "read").allowed
        assert good.decide("crm", "write").allowed
        _explain_and_backtest(settings, sink, signal.details["candidate_runs"])


def _explain_and_backtest(settings: Settings, sink: SinkThread, candidate_runs: int) -> None:
    wait_for(lambda: sink.query(
        "SELECT count() FROM agentledger.control_signals FINAL WHERE rule = 'canary'"
    )[0][0] == 1, 60, what="the canary's transition in control_signals")
    api_key = new_key()
    api = start_api(settings, sink.client, keys=KeyRing([entry_for("ops", api_key, ["*"])]),
                    host="127.0.0.1", port=0)
    try:
        with LedgerClient(api.url, api_key) as client:
            why = client.get("/v1/control/explain", scope="acme/triage-bot/version/1.4.2")
            state = why["states"][0]
            assert state["rule"] == "canary" and state["state"] == READ_ONLY
            numbers = state["explanation"]
            assert numbers["test"] == "msprt_half_normal"
            assert numbers["candidate_runs"] == candidate_runs
            for word in ("1.4.2 succeeded", "baseline 1.4.1", "likelihood ratio",
                         "1/alpha 200"):
                assert word in state["reason"], state["reason"]
            stored = sink.query("SELECT count() FROM agentledger.events FINAL WHERE "
                                "event_type = 'run.finished'")[0][0]
            report = run_backtest(client, load_policy(), since="1d")
        assert report["runs_finished"] == stored
        replayed = [t for t in report["would"] if t[2] == "canary"]
        assert replayed == [t for t in report["made"] if t[2] == "canary"] and replayed
    finally:
        api.server.should_exit = True
        api.thread.join(10)


# -- the pure test (streams/canary.py) ------------------------------------------------------


def test_the_mixture_ratio_is_one_sided_and_grows_with_the_drop():
    from agentledger.streams.canary import Counts, evidence, log_mixture_lr

    assert log_mixture_lr(-0.1, 0.001, 0.07) < 0 < log_mixture_lr(0.1, 0.001, 0.07)
    assert log_mixture_lr(0.05, 0.001, 0.07) < log_mixture_lr(0.1, 0.001, 0.07)
    better = evidence(Counts(400, 360), Counts(100, 99), tau=0.07, margin=0, alpha=0.005)
    assert better.drop < 0 and better.log_lr < better.threshold
    worse = evidence(Counts(400, 360), Counts(100, 70), tau=0.07, margin=0, alpha=0.005)
    assert worse.log_lr > worse.threshold and worse.likelihood_ratio > 200
    # a margin tolerates drops up to it
    tolerated = evidence(Counts(400, 360), Counts(100, 70), tau=0.07, margin=0.25,
                         alpha=0.005)
    assert tolerated.log_lr < tolerated.threshold


def test_a_new_version_is_watched_against_the_incumbent_and_survives_a_restart():
    from agentledger.streams.canary import Canaries

    def make() -> Canaries:
        return Canaries(alpha=0.005, mixture_sd=0.07, margin=0.0, min_runs=30,
                        state=READ_ONLY)

    canaries = make()
    for _ in range(50):
        assert canaries.finished("acme", "bot", "1.0", True, 1.0) is None
    assert canaries.candidates == {}  # the first version is nobody's candidate
    degraded = None
    for n in range(400):
        for _ in range(4):
            canaries.finished("acme", "bot", "1.0", True, 2.0)
        degraded = canaries.finished("acme", "bot", "2.0", n % 2 == 0, 2.0) or degraded
        if degraded:
            break
    assert degraded is not None and degraded.candidate.baseline == "1.0"
    assert degraded.version == "2.0" and degraded.candidate.state == READ_ONLY
    assert canaries.new == [("acme", "bot", "2.0")]
    # a restart: the candidate comes back with its baseline and state; neither version is
    # taken for a new one (the old baseline would otherwise be watched against it)
    again = make()
    again.restore("acme", "bot", "2.0", degraded.candidate.snapshot())
    again.finished("acme", "bot", "1.0", False, 3.0)
    assert list(again.candidates) == [("acme", "bot", "2.0")]
    assert again.candidates[("acme", "bot", "2.0")].state == READ_ONLY
