"""The release gate on a simulated fleet, end to end: the real SDK and simulator produce to a
real Tansu broker, the real sink lands the runs in a real chdb store, ``GET /v1/gate`` and
``agentledger gate`` read it through the real API.

Four cohorts of the CRM, triage and refund agents, simulated interleaved (one run of each
in turn, so machine load lands on every arm alike): a baseline ``1.4.1``; ``1.4.2``, the
same agent with another seed; ``1.4.3``, whose tools fail 15 % of the time instead of
2 % (a worse tool); ``1.5.0``, ten runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.producers.simulator import Simulator
from agentledger.services import ApiServer, start_api
from tests.conftest import CLI
from tests.sinkutil import run_sink

pytestmark = pytest.mark.integration
RUNS_PER_ARM = 250


@dataclass
class GateStore:
    api: ApiServer
    keys: dict[str, str]
    env: dict[str, str]

    def gate(self, key: str = "acme", **params: Any) -> httpx.Response:
        return httpx.get(self.api.url + "/v1/gate", params={"since": "1d", **params},
                         headers={"Authorization": f"Bearer {self.keys[key]}"}, timeout=120)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**self.env, "AGENTLEDGER_API_KEY": self.keys["acme"]}
        return subprocess.run([*CLI, "gate", *args], env=env, capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateStore]:
    data = tmp_path_factory.mktemp("gate")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.3)
        keys = {"acme": new_key(), "globex": new_key()}
        for tenant, key in keys.items():
            append_entry(settings, entry_for(f"{tenant}-reader", key, [tenant]))

        def make(ident: AgentIdentity) -> Ledger:
            return Ledger.connect(broker.bootstrap, ident)

        arms = [Simulator(make, seed=seed, tenants=("acme",), error_rate=rate,
                          agent_version=version)
                for seed, rate, version in ((1, 0.02, "1.4.1"), (2, 0.02, "1.4.2"),
                                            (3, 0.15, "1.4.3"), (4, 0.02, "1.5.0"))]
        for n in range(RUNS_PER_ARM):
            for sim in arms[:3]:
                sim.one_run(n)
        for n in range(10):
            arms[3].one_run(n)
        ledgers = [led for sim in arms for led in sim.ledgers()]
        for led in ledgers:
            led.flush()
        produced = sum(led.delivered for led in ledgers)
        run_sink(settings, produced)
        api = start_api(settings, client_for(settings))
        discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap}
        try:
            yield GateStore(api, keys, env)
        finally:
            discovery.withdraw(settings, discovery.STORE_FILE)
            api.stop()
            for led in ledgers:
                led.close()


def metrics(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in found["metrics"]}


def test_a_version_with_a_worse_tool_fails_and_names_the_metric(fleet: GateStore):
    response = fleet.gate(baseline="agent_version=1.4.1", candidate="agent_version=1.4.3")
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["baseline_runs"] == found["candidate_runs"] == RUNS_PER_ARM
    assert found["verdict"] == "fail" and found["exit_code"] == 2, found["reasons"]
    by = metrics(found)
    assert by["success_rate"]["status"] == "worse"
    assert by["tool_error_rate"]["status"] == "worse"
    assert by["tool_error_rate"]["candidate"] > 0.1 > by["tool_error_rate"]["baseline"]
    assert any(r.startswith("success_rate worse") for r in found["reasons"])


def test_an_identical_candidate_passes(fleet: GateStore):
    found = fleet.gate(baseline="agent_version=1.4.1", candidate="agent_version=1.4.2").json()
    assert found["verdict"] == "pass" and found["exit_code"] == 0, found["reasons"]
    by = metrics(found)
    assert by["success_rate"]["status"] == "pass"
    assert by["success_rate"]["ci_low"] < 0 < by["success_rate"]["ci_high"]
    assert by["cost_per_success"]["baseline"] > 0


def test_ten_runs_are_insufficient_data(fleet: GateStore):
    found = fleet.gate(baseline="agent_version=1.4.1", candidate="agent_version=1.5.0").json()
    assert found["candidate_runs"] == 10
    assert found["verdict"] == "insufficient_data" and found["exit_code"] == 3
    assert "candidate has 10 finished runs" in found["reasons"][0]


def test_cohorts_by_workflow_prompt_and_model_narrow_the_runs(fleet: GateStore):
    found = fleet.gate(baseline="agent_version=1.4.1,prompt_version=7",
                       candidate="agent_version=1.4.3,model=gpt-4o",
                       workflow="crm_update").json()
    assert 0 < found["candidate_runs"] < found["baseline_runs"] < RUNS_PER_ARM


def test_another_tenants_key_sees_none_of_these_runs(fleet: GateStore):
    found = fleet.gate("globex", baseline="agent_version=1.4.1",
                       candidate="agent_version=1.4.3").json()
    assert found["baseline_runs"] == found["candidate_runs"] == 0
    assert found["verdict"] == "insufficient_data"
    assert fleet.gate("acme", baseline="agent_version=1.4.1", candidate="agent_version=1.4.3",
                      tenant="globex").status_code == 403


@pytest.mark.parametrize(("params", "reason"), [
    ({"baseline": "agent=crm", "candidate": "agent_version=1"}, "baseline: cannot select"),
    ({"baseline": "agent_version=1.4.1", "candidate": "agent_version=1.4.1"}, "same cohort"),
    ({"baseline": "agent_version=1.4.1", "candidate": "model=gpt-4o"}, "match both cohorts"),
    ({"baseline": "agent_version=1.4.1", "candidate": "agent_version=1.4.3",
      "config": "alpha: ["}, "config: not YAML"),
    ({"baseline": "agent_version=1.4.1", "candidate": "agent_version=1.4.3",
      "since": "yesterday"}, "since"),
])
def test_bad_requests_are_a_400_with_the_reason(fleet: GateStore, params, reason):
    response = fleet.gate(**params)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


def test_the_cli_exits_with_the_verdict(fleet: GateStore, tmp_path):
    failed = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                       "agent_version=1.4.3", "--since", "1d", "--json")
    assert failed.returncode == 2, failed.stderr
    assert json.loads(failed.stdout)["verdict"] == "fail"
    passed = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                       "agent_version=1.4.2", "--since", "1d")
    assert passed.returncode == 0, passed.stderr
    assert "success_rate" in passed.stdout and "verdict: pass" in passed.stdout
    tiny = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                     "agent_version=1.5.0", "--since", "1d")
    assert tiny.returncode == 3 and "insufficient_data" in tiny.stdout
    # a gate.yaml that tolerates a 50-point drop and ignores tool errors lets 1.4.3 through
    loose = tmp_path / "gate.yaml"
    loose.write_text("version: loose-1\nalpha: 0.05\nmin_runs: 100\npass_score: 95\n"
                     "marginal_score: 75\nmetrics:\n"
                     "  success_rate: {tolerance: 0.5, weight: 1, critical: true}\n")
    lenient = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                        "agent_version=1.4.3", "--since", "1d", "--config", str(loose),
                        "--json")
    assert lenient.returncode == 0, lenient.stderr
    assert json.loads(lenient.stdout)["config_version"] == "loose-1"


def test_the_cli_refuses_bad_input_in_one_line(fleet: GateStore, tmp_path):
    bad = fleet.cli("--baseline", "agent=crm", "--candidate", "agent_version=1.4.3")
    assert bad.returncode == 4
    assert bad.stderr.startswith("error: ") and "cannot select runs by 'agent'" in bad.stderr
    broken = tmp_path / "gate.yaml"
    broken.write_text("alpha: 2\n")
    refused = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                        "agent_version=1.4.3", "--config", str(broken))
    assert refused.returncode == 4 and str(broken) in refused.stderr
    missing = fleet.cli("--baseline", "agent_version=1.4.1", "--candidate",
                        "agent_version=1.4.3", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 4 and "cannot read" in missing.stderr
    for result in (bad, refused, missing):
        assert "Traceback" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1
