"""Regression sets end to end: real runs through the SDK into a real Tansu broker, the real
sink into a real chdb store, ``agentledger regression export`` through the real API, then
``regression run`` of a scripted agent as a baseline and two candidates (subprocesses of
the real CLI), compared paired with McNemar's exact test.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.services import start_api
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration
CASES = 60
AGENT = "tests.shell.regression_agent"


@dataclass
class Stack:
    env: dict[str, str]
    sink: SinkThread
    set_file: Path
    api_url: str

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "regression", *args], env=self.env, capture_output=True,
                              text=True, timeout=240)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("regression")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.2)
        key = new_key()
        append_entry(settings, entry_for("acme-reader", key, ["acme"]))
        with SinkThread(settings) as sink:
            ident = AgentIdentity(tenant="acme", agent="triage-bot", agent_version="1.4.1",
                                  principal="svc")
            with Ledger.connect(broker.bootstrap, ident) as ledger:
                for n in range(CASES + 5):  # production runs: the newest CASES are the set
                    with ledger.run("ticket_triage", inputs={"ticket": n},
                                    input_ref=f"ticket:{n}") as run:
                        call = run.tool_call("crm", "lookup", mode="read", args={"n": n})
                        with call:
                            pass
                ledger.flush()
            wait_for(lambda: sink.query("SELECT count() FROM events FINAL WHERE "
                                        "event_type = 'run.finished'")[0][0] == CASES + 5,
                     timeout_s=60, what="the production runs landing")
            api = start_api(settings, client_for(settings))
            discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
            env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
                   "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
                   "AGENTLEDGER_API_KEY": key}
            try:
                yield Stack(env, sink, data / "set.json", api.url)
            finally:
                discovery.withdraw(settings, discovery.STORE_FILE)
                api.stop()


def test_export_writes_a_versioned_set_of_real_runs(stack: Stack):
    done = stack.cli("export", "--workflow", "ticket_triage", "--n", str(CASES),
                     "--outcome", "success", "-o", str(stack.set_file))
    assert done.returncode == 0, done.stderr
    found = json.loads(stack.set_file.read_text())
    assert found["format"] == "agentledger.regression_set/1" and len(found["set_id"]) == 16
    assert found["tenant"] == "acme" and found["workflow"] == "ticket_triage"
    cases = found["cases"]
    assert len(cases) == CASES
    assert [c["input_ref"] for c in cases] == [f"ticket:{n}" for n in range(5, CASES + 5)]
    assert all(c["outcome"] == "success" and c["tools"] == ["crm"] for c in cases)
    assert all(len(c["inputs_hash"]) == 64 for c in cases)
    # an unknown workflow is a clear error, exit 4
    missing = stack.cli("export", "--workflow", "nope")
    assert missing.returncode == 4 and "no finished runs" in missing.stderr


def _run(stack: Stack, agent: str, label: str, *extra: str) -> subprocess.CompletedProcess:
    return stack.cli("run", str(stack.set_file), "--agent", f"{AGENT}:{agent}",
                     "--resolver", f"{AGENT}:resolve", "--label", label, "--json", *extra)


def test_a_candidate_that_breaks_a_tenth_fails_and_one_that_breaks_none_passes(stack: Stack):
    assert stack.set_file.exists(), "runs after the export test"
    base = _run(stack, "good", "baseline")
    assert base.returncode == 0, base.stderr
    ran = json.loads(base.stdout.splitlines()[-1])
    assert ran["outcomes"] == {"success": CASES}
    assert ran["inputs_hash_matches"] == CASES  # the resolver gave back the original inputs

    bad = _run(stack, "breaks_a_tenth", "cand-bad", "--baseline", "baseline")
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    comparison = json.loads(bad.stdout.splitlines()[-1])["comparison"]
    assert comparison["verdict"] == "fail" and comparison["paired"] == CASES
    assert comparison["broken"] == CASES // 10 and comparison["fixed"] == 0
    assert comparison["mcnemar_p"] == pytest.approx(0.5 ** (CASES // 10))
    assert comparison["reasons"][0].startswith("success worse")

    ok = _run(stack, "good", "cand-ok", "--baseline", "baseline")
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    comparison = json.loads(ok.stdout.splitlines()[-1])["comparison"]
    assert comparison["verdict"] == "pass" and comparison["broken"] == 0
    assert comparison["cost_ratio"] == pytest.approx(1.0)

    # the labelled runs are a gate cohort too (env release:<label>), apart from production
    rows = stack.sink.query("SELECT env, count() FROM events FINAL WHERE event_type = "
                            "'run.finished' GROUP BY env ORDER BY env")
    assert rows == [("prod", CASES + 5), ("release:baseline", CASES),
                    ("release:cand-bad", CASES), ("release:cand-ok", CASES)]
    again = stack.cli("compare", str(stack.set_file), "--baseline", "baseline",
                      "--candidate", "cand-bad")
    assert again.returncode == 2 and "verdict: fail" in again.stdout
    gate = httpx.get(f"{stack.api_url}/v1/gate", timeout=60, params={
        "baseline": "release=baseline", "candidate": "release=cand-bad", "since": "1d"},
        headers={"Authorization": f"Bearer {stack.env['AGENTLEDGER_API_KEY']}"}).json()
    assert gate["baseline_runs"] == gate["candidate_runs"] == CASES
    assert gate["verdict"] == "insufficient_data"  # 60 runs: under the gate's min_runs


def test_bad_input_is_one_line_and_exit_4(stack: Stack):
    done = stack.cli("run", str(stack.set_file), "--agent", "nomodule", "--label", "x")
    assert done.returncode == 4 and "module:function" in done.stderr
    assert "Traceback" not in done.stderr
    bad_label = stack.cli("compare", str(stack.set_file), "--baseline", "base line",
                          "--candidate", "x")
    assert bad_label.returncode == 4 and "label" in bad_label.stderr
