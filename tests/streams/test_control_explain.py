"""`control explain` and `control backtest` over a recorded scenario: a real broker, a
real stream worker, the real sink into chdb and the real API."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from agentledger.api_client import LedgerClient
from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.cli.control import run_backtest
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.guard import ControlFollower
from agentledger.producers.scenarios import OUTAGE_TOOL, run_scenario
from agentledger.services import start_api
from agentledger.streams.control_policy import load_policy
from tests.helpers import wait_for
from tests.sinkutil import SinkThread
from tests.streamutil import StreamWorker

pytestmark = pytest.mark.integration


def test_explain_names_the_trigger_and_backtest_reproduces_the_transitions(
        settings: Settings, service_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = settings.kafka_bootstrap or ""
    factory = lambda ident, clock: Ledger.connect(bootstrap, ident, clock=clock)  # noqa: E731
    with StreamWorker(service_env, tmp_path / "worker.log") as worker, \
            ControlFollower(bootstrap) as follower, SinkThread(settings) as sink:
        worker.wait_ready(follower)
        result = run_scenario("tool-outage", factory, follower=follower, seed=3)
        wait_for(lambda: follower.event_time >= result.end_ts, 60, what="decisions")
        made = {k: s for k, s in follower.state.items() if s.kind in ("breaker", "safe_mode")}
        assert made, "the outage made transitions"
        versions = sum(s.version for s in made.values())
        wait_for(lambda: sink.query(
            "SELECT count() FROM agentledger.control_signals FINAL "
            "WHERE kind IN ('breaker', 'safe_mode')")[0][0] == versions, 60,
            what="every transition in control_signals")
        wait_for(lambda: sink.query("SELECT count() FROM agentledger.events FINAL")[0][0]
                 == result.events, 60, what="every event in the store")

        key = new_key()
        api = start_api(settings, sink.client, keys=KeyRing([entry_for("ops", key, ["*"])]),
                        host="127.0.0.1", port=0)
        try:
            with LedgerClient(api.url, key) as ledger:
                why = ledger.get("/v1/control/explain", scope=f"acme/*/{OUTAGE_TOOL}")
                breaker = why["states"][0]
                assert breaker["kind"] == "breaker" and breaker["state"] == "CLOSED"
                trip = breaker["last_trip"]
                assert trip["explanation"]["rule_kind"] == "failure_rate"
                assert trip["explanation"]["calls"] >= trip["explanation"]["min_calls"]
                assert trip["explanation"]["threshold"] == 0.5
                failed = {r[0] for r in sink.query(
                    "SELECT toString(event_id) FROM agentledger.events FINAL WHERE "
                    "event_type = 'tool.result' AND tool = {tool:String} "
                    "AND status IN ('error', 'timeout')", tool=OUTAGE_TOOL)}
                assert trip["triggered_by"] and set(trip["triggered_by"]) <= failed, \
                    "the trip names the failed results that triggered it"
                agent = ledger.get("/v1/control/explain", scope="acme/crm-agent")
                degraded = agent["states"][0]["last_trip"]["explanation"]
                assert degraded["rule_kind"] == "exact_binomial"
                assert degraded["lower_bound"] > degraded["threshold"]
                with pytest.raises(Exception, match=r"TENANT"):
                    ledger.get("/v1/control/explain", scope="no scope here")

                report = run_backtest(ledger, load_policy(), since="1d")

            # the commands as an operator types them, against this API
            from typer.testing import CliRunner

            from agentledger import cli

            monkeypatch.setattr(cli.connect, "ledger", lambda *a: LedgerClient(api.url, key))
            shown = CliRunner().invoke(cli.app, ["control", "explain", f"acme/*/{OUTAGE_TOOL}"])
            assert shown.exit_code == 0, shown.output
            assert "last tripped" in shown.output and trip["triggered_by"][-1] in shown.output
            policy = tmp_path / "policy.yaml"
            policy.write_text(resources.files("agentledger.streams").joinpath(
                "default_policy.yaml").read_text())
            done = CliRunner().invoke(cli.app, ["policy", "backtest", str(policy),
                                                "--since", "1d"])
            assert done.exit_code == 0, done.output
            assert "episodes (trips and recoveries" in done.output
            assert report["results"] == sink.query(
                "SELECT count() FROM agentledger.events FINAL "
                "WHERE event_type = 'tool.result'")[0][0]
            # every trip and recovery, of every scope, as made; safe mode transition for
            # transition. (Half-open probe cycles depend on which results reach the worker
            # first across partitions, which an event-time replay cannot know.)
            assert report["episodes_differ"] == [], (report["would"], report["made"])
            assert report["episodes_same"] >= 2
            exact = sorted(t for t in report["would"] if t[0] == "safe_mode")
            assert exact == sorted(t for t in report["made"] if t[0] == "safe_mode") and exact
        finally:  # the sink owns the client: stop serving, leave it open
            api.server.should_exit = True
            api.thread.join(10)
