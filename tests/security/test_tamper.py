"""The tamper suite (issue 23): an attacker with direct write access to the store, after a
witness copy of the signed heads was taken. Each case tampers with ``events``, runs
``agentledger verify --ledger --witness DIR`` (the real CLI, through the real API) and
expects exit 1 naming what was done; the store is restored from a pristine copy between
cases. One shared stack for the module: a real Tansu broker, the real sink (which signs
checkpoints) and a real chdb store.

The runs land in two phases; a copy of ``events`` after the first is the "older
snapshot" an attacker restores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from clickhouse_connect.driver.client import Client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentledger.auth import append_entry, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import discovery, signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.producers.emitter import AgentIdentity, Ledger
from agentledger.queries.common import ALL
from agentledger.queries.replay import verify as verify_runs
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.schemas.integrity import GENESIS, event_hash
from agentledger.services import start_api
from tests.conftest import CLI
from tests.helpers import wait_for
from tests.sinkutil import SinkThread

pytestmark = pytest.mark.integration
RUNS_PER_PHASE = 8
SIGNER = "signing-bot"  # an agent with an ed25519 key registered in the catalog
SIGNER_KEY, WRONG_KEY = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
SIGNED_EVENTS = 3 * 4


@dataclass
class Stack:
    env: dict[str, str]
    client: Client
    witness: Path
    public_key: str
    api_url: str
    reader_key: str

    def sql(self, statement: str, **params: Any) -> None:
        """A write by the attacker, straight to the store."""
        self.client.command(statement, parameters=params or None,
                            settings={"mutations_sync": 2})

    def query(self, sql: str, **params: Any) -> list[tuple]:
        return self.client.query(sql, parameters=params or None).result_rows

    def verify(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        done = subprocess.run([*CLI, "verify", "--ledger", "--witness", str(self.witness),
                               "--json", *extra], env=self.env, capture_output=True,
                              text=True, timeout=180)
        assert "Traceback" not in done.stderr, done.stderr
        report = json.loads(done.stdout) if done.stdout.strip() else {}
        return done.returncode, report, done.stderr


def _runs(ledger: Ledger, phase: int, runs: int = RUNS_PER_PHASE) -> None:
    for n in range(runs):
        with ledger.run("ticket_triage", inputs={"phase": phase, "n": n}) as run:
            with run.tool_call("crm", "lookup", mode="read", args={"n": n}):
                pass
            run.finish("success")
    ledger.flush(30)


def take_witness(stack_settings: Settings, env: dict[str, str], directory: Path) -> None:
    """The witness copy, taken the way an operator would: ``checkpoints export DIR``."""
    done = subprocess.run([*CLI, "checkpoints", "export", str(directory)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def wait_covered(sink: SinkThread, events: int) -> None:
    """Until the sink's signed heads cover every landed event."""
    wait_for(lambda: sink.query("SELECT sum(s) FROM (SELECT max(tree_size) AS s FROM "
                                "checkpoints GROUP BY log_id)")[0][0] >= events,
             timeout_s=60, what=f"signed heads covering {events} events")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("tamper")
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=data / "data", kafka_bootstrap=broker.bootstrap,
                            sink_batch_seconds=0.2)
        key, reader = new_key(), new_key()
        append_entry(settings, entry_for("auditor", key, ["*"]))
        append_entry(settings, entry_for("acme-reader", reader, ["acme"]))
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": str(settings.data_dir),
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap, "AGENTLEDGER_API_KEY": key}
        with SinkThread(settings) as sink:
            for tenant in ("acme", "globex"):
                ident = AgentIdentity(tenant=tenant, agent="triage-bot", agent_version="1.0",
                                      principal="svc")
                with Ledger.connect(broker.bootstrap, ident) as ledger:
                    _runs(ledger, 1)
            first = RUNS_PER_PHASE * 2 * 4
            wait_for(lambda: sink.query("SELECT count() FROM events")[0][0] >= first,
                     timeout_s=60, what=f"{first} events of phase 1 landing")
            sink.client.command("CREATE TABLE events_phase1 AS events")
            sink.client.command("INSERT INTO events_phase1 SELECT * FROM events")
            ident = AgentIdentity(tenant="acme", agent="triage-bot", agent_version="1.0",
                                  principal="svc")
            with Ledger.connect(broker.bootstrap, ident) as ledger:
                _runs(ledger, 2)
            signer = AgentIdentity(tenant="acme", agent=SIGNER, agent_version="1.0",
                                   principal="svc")
            for signing_key in (SIGNER_KEY, WRONG_KEY, None):  # one run each
                with Ledger.connect(broker.bootstrap, signer, signing_key=signing_key) as led:
                    _runs(led, 2, runs=1)
            total = first + RUNS_PER_PHASE * 4 + SIGNED_EVENTS
            wait_for(lambda: sink.query("SELECT count() FROM events")[0][0] >= total,
                     timeout_s=60, what=f"{total} events landing")
            wait_covered(sink, total)
            api = start_api(settings, client_for(settings))
            discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
            witness = data / "witness"
            attacker = client_for(settings)
            try:
                take_witness(settings, env, witness)
                attacker.command("CREATE TABLE events_pristine AS events")
                attacker.command("INSERT INTO events_pristine SELECT * FROM events")
                yield Stack(env, attacker, witness, signing.ledger_key(settings).public_text,
                            api.url, reader)
            finally:
                attacker.close()
                discovery.withdraw(settings, discovery.STORE_FILE)
                api.stop()


@pytest.fixture
def store(stack: Stack) -> Iterator[Stack]:
    """The stack, its ``events`` restored to the pristine copy after the case."""
    yield stack
    stack.sql("TRUNCATE TABLE events")
    stack.sql("INSERT INTO events SELECT * FROM events_pristine")


def _a_run(stack: Stack, tenant: str = "acme") -> tuple[str, list[tuple]]:
    """A run of the first phase (in the middle of its log), with its events (event id,
    seq, partition, offset) by seq."""
    run_id = stack.query(
        "SELECT run_id FROM events_phase1 WHERE tenant = {t:String} AND seq = 0 "
        "ORDER BY kafka_partition, kafka_offset LIMIT 1 OFFSET 1", t=tenant)[0][0]
    events = stack.query("SELECT toString(event_id), seq, kafka_partition, kafka_offset "
                         "FROM events WHERE run_id = {r:String} ORDER BY seq", r=run_id)
    return run_id, events


def _rechained(stack: Stack, run_id: str, change: Callable[[dict[str, Any]], None]
               ) -> list[list[Any]]:
    """The run's rows rewritten by ``change`` and re-chained, as an attacker would."""
    raws = stack.query("SELECT raw, kafka_partition, kafka_offset FROM events "
                       "WHERE run_id = {r:String} ORDER BY seq", r=run_id)
    rows, prev = [], GENESIS
    for raw, partition, offset in raws:
        event = orjson.loads(raw)
        change(event)
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(event, prev)
        text = orjson.dumps(event)
        rows.append(event_row(event, text, partition, offset))
    return rows


def _named(report: dict[str, Any]) -> dict[str, Any]:
    first = report.get("first_difference")
    assert first, report
    return first


def test_an_untouched_ledger_verifies_against_its_witness(stack: Stack) -> None:
    code, report, err = stack.verify()
    assert code == 0, (err, report)
    assert report["ok"] and report["problems"] == [] and report["uncovered"] == 0, report
    assert report["witness"]["heads"] >= 1 and report["witness"]["problems"] == []
    assert report["leaves"] == RUNS_PER_PHASE * 3 * 4 + SIGNED_EVENTS
    shown = subprocess.run([*CLI, "verify", "--ledger", "--witness", str(stack.witness)],
                           env=stack.env, capture_output=True, text=True, timeout=180)
    assert shown.returncode == 0 and shown.stdout.startswith("ledger ok:"), shown.stdout
    recent = subprocess.run([*CLI, "verify", "--ledger", "--since", "1h", "--json"],
                            env=stack.env, capture_output=True, text=True, timeout=180)
    assert recent.returncode == 0 and json.loads(recent.stdout)["heads"] >= 1, recent.stderr
    # the whole ledger is every tenant's: a tenant's key is refused; a bad witness is a
    # clear error, not a traceback
    refused = httpx.post(f"{stack.api_url}/v1/ledger/verify", json={}, timeout=60,
                         headers={"Authorization": f"Bearer {stack.reader_key}"})
    assert refused.status_code == 403, refused.text
    missing = subprocess.run([*CLI, "verify", "--ledger", "--witness", "/nonexistent/w"],
                             env=stack.env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "no witness directory" in missing.stderr
    assert "Traceback" not in missing.stderr


NODE_CHECK = Path(__file__).with_name("bundle_check.test.mjs")


def test_a_bundle_carries_an_inclusion_proof_checked_offline(stack: Stack,
                                                              tmp_path: Path) -> None:
    run_id, events = _a_run(stack)
    verified = subprocess.run([*CLI, "verify", run_id, "--json"], env=stack.env,
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    proof = json.loads(verified.stdout)["runs"][0]["inclusion"]
    assert proof["status"] == "included" and proof["leaf"]["event_id"] == events[-1][0]
    assert len(json.dumps(proof)) <= 2048, proof
    bundle = tmp_path / "bundle.json"
    replay = subprocess.run([*CLI, "replay", run_id, "-o", str(bundle)], env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    document = json.loads(bundle.read_text())
    assert document["runs"][0]["inclusion"] == proof
    public = stack.public_key
    ok = subprocess.run([*CLI, "verify-bundle", str(bundle), "--public-key", public],
                        env=stack.env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("bundle ok"), ok.stdout + ok.stderr
    document["runs"][0]["events"][1]["body"]["args"] = {"n": -1}
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    refused = subprocess.run([*CLI, "verify-bundle", str(tampered), "--public-key", public,
                              "--json"], env=stack.env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "chain broken at seq 1" in json.loads(refused.stdout)["problems"][0]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run([node, "--test", str(NODE_CHECK)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "BUNDLE_FILE": str(bundle),
                                            "TAMPERED_FILE": str(tampered),
                                            "LEDGER_PUBLIC_KEY": public})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "# pass 2" in done.stdout and "# fail 0" in done.stdout, done.stdout


def test_a_deleted_run_is_named(store: Stack) -> None:
    run_id, events = _a_run(store)
    store.sql("ALTER TABLE events DELETE WHERE run_id = {r:String}", r=run_id)
    code, report, err = store.verify()
    assert code == 1, (err, report)
    first = _named(report)
    assert (first["change"], first["run_id"], first["event_id"]) == (
        "deleted", run_id, events[0][0]), first
    assert first["log_id"] == f"agent.events/{events[0][2]}"
    # verify RUN no longer answers 404 as for a run that never existed
    gone = subprocess.run([*CLI, "verify", run_id, "--json"], env=store.env,
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert json.loads(gone.stdout)["runs"][0]["problem"].startswith("deleted: the sink landed")
    # without a witness the store's own signed heads still catch it, naming the range
    alone = subprocess.run([*CLI, "verify", "--ledger", "--json"], env=store.env,
                           capture_output=True, text=True, timeout=180)
    assert alone.returncode == 1, alone.stdout + alone.stderr
    log = next(g for g in json.loads(alone.stdout)["logs"] if g["log_id"] == first["log_id"])
    assert log["window"]["lo"] <= first["index"] < log["window"]["hi"], log["window"]


def test_a_rewritten_run_with_a_recomputed_chain_is_named(store: Stack) -> None:
    run_id, events = _a_run(store)

    def cheaper(event: dict[str, Any]) -> None:
        if event["event_type"] == "tool.call":
            event["body"]["args"] = {"n": 999}

    rows = _rechained(store, run_id, cheaper)
    store.sql("ALTER TABLE events DELETE WHERE run_id = {r:String}", r=run_id)
    store.client.insert("events", rows, column_names=list(EVENT_COLUMNS))
    run_check = subprocess.run([*CLI, "verify", run_id, "--json"], env=store.env,
                               capture_output=True, text=True, timeout=120)
    assert run_check.returncode == 0, run_check.stdout  # the run's own chain holds
    code, report, err = store.verify()
    assert code == 1, (err, report)
    first = _named(report)
    rewritten = next(e for e in events if e[1] == 1)  # seq 1: the tool call
    assert (first["change"], first["run_id"], first["event_id"]) == (
        "altered", run_id, rewritten[0]), first
    assert "event_hash" in first["detail"]


def test_a_truncated_run_tail_is_named(store: Stack) -> None:
    run_id, events = _a_run(store)
    last_two = [e[0] for e in events[-2:]]
    store.sql("ALTER TABLE events DELETE WHERE event_id IN {ids:Array(UUID)}", ids=last_two)
    code, report, err = store.verify()
    assert code == 1, (err, report)
    first = _named(report)
    assert (first["change"], first["run_id"], first["event_id"]) == (
        "deleted", run_id, last_two[0]), first


def test_a_forged_run_is_named(store: Stack) -> None:
    run_id, _ = _a_run(store)

    def forged(event: dict[str, Any]) -> None:
        event["run_id"] = "forged-run"
        event["event_id"] = event["event_id"][:-4] + "f00d"

    rows = _rechained(store, run_id, forged)
    store.client.insert("events", rows, column_names=list(EVENT_COLUMNS))
    code, report, err = store.verify()
    assert code == 1, (err, report)
    first = _named(report)
    assert (first["change"], first["run_id"]) == ("inserted", "forged-run"), first
    assert any("claim offset" in p for p in report["problems"]), report["problems"]


def test_two_swapped_events_are_named(store: Stack) -> None:
    run_id, events = _a_run(store)
    a, b = events[0], events[-1]  # the run's first and last events trade places in its log
    for (event_id, *_), (_, _, _, offset) in ((a, b), (b, a)):
        store.sql("ALTER TABLE events UPDATE kafka_offset = {o:UInt64} WHERE event_id = "
                  "{e:UUID}", o=offset, e=event_id)
    code, report, err = store.verify()
    assert code == 1, (err, report)
    first = _named(report)
    assert (first["change"], first["event_id"], first["run_id"]) == (
        "reordered", a[0], run_id), first


def test_an_older_snapshot_restored_is_named(store: Stack) -> None:
    newest = store.query("SELECT toString(event_id), run_id, kafka_partition FROM events "
                         "WHERE event_id NOT IN (SELECT event_id FROM events_phase1) "
                         "ORDER BY kafka_partition, kafka_offset LIMIT 1 BY kafka_partition")
    store.sql("TRUNCATE TABLE events")
    store.sql("INSERT INTO events SELECT * FROM events_phase1")
    code, report, err = store.verify()
    assert code == 1, (err, report)
    named = {log["log_id"]: log.get("first_difference") for log in report["logs"]}
    for event_id, run_id, partition in newest:
        first = named[f"agent.events/{partition}"]
        assert first and (first["change"], first["event_id"], first["run_id"]) == (
            "deleted", event_id, run_id), (first, newest)
    assert any("the store holds" in p for p in report["problems"]), report["problems"]


def test_events_of_an_agent_that_must_sign_are_checked_against_its_registered_key(
        stack: Stack) -> None:
    """The agent's public key as the catalog registers it (``public_key`` of the agent);
    its runs signed by that key verify, one signed by another key or unsigned is named."""
    keys = {SIGNER: SIGNER_KEY.public_key()}
    runs = [r[0] for r in stack.query(
        "SELECT run_id FROM events WHERE agent = {a:String} AND seq = 0 "
        "ORDER BY kafka_partition, kafka_offset", a=SIGNER)]
    results = [verify_runs(stack.client, ALL, r, keys)["runs"][0] for r in runs]
    assert len(results) == 3, results
    good = [r for r in results if r["ok"]]
    assert len(good) == 1 and good[0]["signatures"] == {"checked": 4, "bad": 0}, results
    wrong = next(r for r in results if not r["ok"] and "wrongly signed" in r["problem"])
    assert wrong["broken_seq"] == 0 and wrong["signatures"] == {"checked": 4, "bad": 4}
    assert wrong["broken_event_id"] and f"agent {SIGNER} must sign" in wrong["problem"]
    unsigned = next(r for r in results if not r["ok"] and r is not wrong)
    assert unsigned["problem"].startswith("unsigned"), unsigned
    # without a registered key the same runs verify as before (the signature is optional)
    assert all(verify_runs(stack.client, ALL, r)["runs"][0]["ok"] for r in runs)
