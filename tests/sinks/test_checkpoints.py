"""Signed checkpoints in the real sink (real Tansu broker, real chdb store): every landed
event is one leaf of its partition's log, redeliveries are not leaves again, a ``kill -9``
mid-batch leaves the tree equal to a recomputation from the stored events, and the
witness export verifies with the public key alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from agentledger.core import checkpoint, merkle, signing
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.queries import ledger_verify
from agentledger.schemas import topics
from tests.conftest import CLI, consume_all
from tests.helpers import wait_for
from tests.sinkutil import SinkThread, api_scalar, query

pytestmark = pytest.mark.integration

COVERED = ("SELECT sum(s) FROM (SELECT max(tree_size) AS s FROM checkpoints GROUP BY log_id)")


def recomputed_roots(rows: list[tuple]) -> dict[str, tuple[int, str]]:
    """Each log's (size, root) from stored events (partition, offset, id, tenant, run, hash):
    one leaf per event id at its lowest offset, in offset order (the contract)."""
    by_log: dict[str, merkle.CompactRange] = {}
    seen: set[tuple[int, str]] = set()
    for partition, _offset, event_id, tenant, run_id, event_hash in sorted(rows):
        if (partition, str(event_id)) in seen:
            continue
        seen.add((partition, str(event_id)))
        tree = by_log.setdefault(checkpoint.log_id(partition), merkle.CompactRange())
        tree.append(merkle.leaf_hash(merkle.leaf_input(tenant, run_id, str(event_id),
                                                       event_hash)))
    return {log: (t.size, t.root().hex()) for log, t in by_log.items()}


EVENTS_SQL = ("SELECT kafka_partition, kafka_offset, event_id, tenant, run_id, hash "
              "FROM events")


def latest_heads(rows: list[tuple]) -> dict[str, checkpoint.SignedHead]:
    heads: dict[str, checkpoint.SignedHead] = {}
    for r in rows:
        head = checkpoint.SignedHead(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]),
                                     str(r[5]))
        if head.log_id not in heads or head.tree_size > heads[head.log_id].tree_size:
            heads[head.log_id] = head
    return heads


HEADS_SQL = ("SELECT log_id, tree_size, root_hash, toUnixTimestamp64Milli(issued_at), key_id, "
             "signature FROM checkpoints")


def test_redelivered_events_are_one_leaf_and_heads_cover_them(settings: Settings) -> None:
    # a window of 20 recent ids: older duplicates are found by asking the store
    settings = settings.model_copy(update={"checkpoint_interval_seconds": 0.3,
                                           "checkpoint_recent_ids": 20})
    bootstrap = settings.kafka_bootstrap or ""
    emitted = Simulator(lambda ident: Ledger.connect(bootstrap, ident), seed=5).run(40).events
    # a producer retry: the same events again, at new offsets (same key, same partition)
    originals = consume_all(bootstrap, topics.EVENTS, emitted)
    again = originals[:: 3]
    unique = len({orjson.loads(m.value())["event_id"] for m in originals})
    total = len(originals) + len(again)

    with SinkThread(settings) as sink:
        logs = sink.sink.writes.writer.logs  # type: ignore[attr-defined]
        wait_for(lambda: logs.stats.leaves >= unique, 60, what=f"{unique} leaves")
        # the retries arrive once the originals are leaves (and mostly out of the window)
        producer = Producer(client_config(bootstrap, "producer"))
        for msg in again:
            producer.produce(topics.EVENTS, key=msg.key(), value=msg.value())
        assert producer.flush(30) == 0
        wait_for(lambda: logs.stats.leaves + logs.stats.duplicates >= total, 30,
                 what="every message judged", seen=lambda: logs.stats)
        wait_for(lambda: sink.query(COVERED)[0][0] >= unique, 60,
                 what=f"signed heads covering {unique} leaves")
        assert logs.stats.leaves == unique and logs.stats.duplicates == len(again)
        # 3 logs keep 20 ids each: every other retry was found by asking the store
        assert logs.stats.lookups >= len(again) - 3 * 20 > 0, logs.stats
        # verify --ledger's recomputation from events agrees: no false alarm on redelivery
        verified = ledger_verify.verify_ledger(sink.client, signing.ledger_key(settings).keyring())
        assert verified["ok"] and verified["leaves"] == unique, verified["problems"]
        events = sink.query(EVENTS_SQL)
        leaves = sink.query("SELECT count(), uniqExact(event_id) FROM ledger_leaves FINAL")
        heads = latest_heads(sink.query(HEADS_SQL))
        state = {r[0]: (r[1], r[2]) for r in sink.query(
            "SELECT log_id, argMax(tree_size, next_offset), argMax(frontier, next_offset) "
            "FROM ledger_state GROUP BY log_id")}
    assert leaves == [(unique, unique)]
    expected = recomputed_roots(events)
    assert sum(size for size, _ in expected.values()) == unique
    key = signing.ledger_key(settings)
    for log, (size, root) in expected.items():
        assert (heads[log].tree_size, heads[log].root_hash) == (size, root), log
        assert checkpoint.verify_head(heads[log], key.keyring())
        frontier = merkle.CompactRange.from_dict(orjson.loads(state[log][1]))
        assert (frontier.size, frontier.root().hex()) == (size, root)

    # the same offsets read again by another group: already covered, nothing appended
    again_settings = settings.model_copy(update={"sink_group": "agentledger-sink-again"})
    with SinkThread(again_settings) as sink:
        logs = sink.sink.writes.writer.logs  # type: ignore[attr-defined]
        wait_for(lambda: logs.stats.already_covered >= total, 60,
                 what=f"{total} offsets re-read", seen=lambda: logs.stats)
        assert logs.stats.leaves == 0
        assert sink.query("SELECT count() FROM ledger_leaves FINAL") == [(unique,)]


def assert_ledger_verifies(witness: Path, env: dict[str, str], leaves: int) -> None:
    """``verify --ledger`` recomputes the trees from events and holds them to the witness."""
    checked = subprocess.run([*CLI, "verify", "--ledger", "--witness", str(witness), "--json"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert json.loads(checked.stdout)["leaves"] == leaves


def followed_size(directory: Path) -> int:
    """Leaves a witness directory holds (all logs)."""
    return sum(len(p.read_text().splitlines()) for p in directory.glob("*.leaves.jsonl"))


def start_sink(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "sink"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def assert_store_tree_is_exact(settings: Settings, n: int) -> dict[str, tuple[int, str]]:
    """The leaves, the persisted frontier and the latest heads all equal a recomputation
    from the stored events, and every head ever signed verifies; the recomputed roots."""
    events = query(settings, EVENTS_SQL)
    expected = recomputed_roots(events)
    assert sum(size for size, _ in expected.values()) == n
    assert query(settings, "SELECT count(), uniqExact(event_id), uniqExact(log_id, leaf_index) "
                 "FROM ledger_leaves FINAL") == [(n, n, n)]
    heads = latest_heads(query(settings, HEADS_SQL))
    state = {r[0]: r[1] for r in query(
        settings, "SELECT log_id, argMax(frontier, next_offset) FROM ledger_state "
        "GROUP BY log_id")}
    ring = signing.ledger_key(settings).keyring()
    for log, (size, root) in expected.items():
        frontier = merkle.CompactRange.from_dict(orjson.loads(state[log]))
        assert (frontier.size, frontier.root().hex()) == (size, root), log
        assert (heads[log].tree_size, heads[log].root_hash) == (size, root), log
    for row in query(settings, HEADS_SQL):  # every head ever signed still verifies
        head = checkpoint.SignedHead(str(row[0]), int(row[1]), str(row[2]), int(row[3]),
                                     str(row[4]), str(row[5]))
        assert checkpoint.verify_head(head, ring), head

    return expected


def assert_witness_checks_alone(witness: Path, cli_env: dict[str, str],
                                expected: dict[str, tuple[int, str]], n: int) -> None:
    """``checkpoints export``: heads, leaves and keys out of the store, and each log's
    leaves recompute every head's root, checked with ``keys.json`` alone."""
    done = subprocess.run([*CLI, "checkpoints", "export", str(witness), "--json"],
                          env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    first = json.loads(done.stdout.strip().splitlines()[-1])
    assert first["heads_written"] >= len(expected) and first["leaves_written"] == n
    keys = signing.Keyring.parse(k["public_key"] for k in
                                 json.loads((witness / "keys.json").read_text())["keys"])
    for log, (size, root) in expected.items():
        stem = log.replace("/", "_")
        heads_file = [json.loads(line) for line in
                      (witness / f"{stem}.heads.jsonl").read_text().splitlines()]
        assert heads_file and all(checkpoint.verify_head(
            checkpoint.SignedHead.from_dict(h), keys) for h in heads_file)
        tree = merkle.CompactRange()
        roots = {}
        for line in (witness / f"{stem}.leaves.jsonl").read_text().splitlines():
            leaf = json.loads(line)
            assert leaf["index"] == tree.size
            tree.append(merkle.leaf_hash(merkle.leaf_input(
                leaf["tenant"], leaf["run_id"], leaf["event_id"], leaf["event_hash"])))
            roots[tree.size] = tree.root().hex()
        assert (tree.size, tree.root().hex()) == (size, root)
        assert all(roots[h["tree_size"]] == h["root_hash"] for h in heads_file)
def test_kill_9_mid_batch_then_restart_keeps_the_tree_exact_and_exports_a_witness(
        settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    env = {**service_env, "AGENTLEDGER_SINK_BATCH_ROWS": "300",
           "AGENTLEDGER_CHECKPOINT_INTERVAL_SECONDS": "0.3"}
    sim = Simulator(lambda ident: Ledger.connect(settings.kafka_bootstrap, ident), seed=9)
    produced: list[int] = []
    producer = threading.Thread(target=lambda: produced.append(sim.run(1500, rate=200).events))
    sink = start_sink(env)
    follow: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: api_scalar(settings, "SELECT count() FROM events") >= 0, 60,
                 what="the sink's store API")
        producer.start()
        wait_for(lambda: api_scalar(settings, "SELECT count() FROM ledger_leaves") >= 600,
                 60, what="first leaves to land")
        assert producer.is_alive(), "the kill must happen while events are still arriving"
        os.kill(sink.pid, signal.SIGKILL)
        assert sink.wait(10) == -signal.SIGKILL
        producer.join(60)
        n = produced[0]
        sink = start_sink(env)
        wait_for(lambda: api_scalar(settings, "SELECT count() FROM events") >= 0, 60,
                 what="the restarted sink's store API")
        # a witness following the compacted topic while the sink catches up
        follow = subprocess.Popen([*CLI, "checkpoints", "export", str(tmp_path / "followed"),
                                   "--follow", "--json"], env=service_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: api_scalar(settings, COVERED) >= n, 90,
                 what=f"signed heads covering all {n} events after the restart")
        wait_for(lambda: followed_size(tmp_path / "followed") >= n, 60,
                 what=f"the following witness to reach {n} leaves")
        # more events now: only the topic tells the follower about their heads
        n += Simulator(lambda ident: Ledger.connect(settings.kafka_bootstrap, ident),
                       seed=11).run(10).events
        wait_for(lambda: followed_size(tmp_path / "followed") >= n, 60,
                 what=f"the following witness to reach {n} leaves from the topic")
        follow.send_signal(signal.SIGTERM)
        out, errors = follow.communicate(timeout=60)
        assert follow.returncode == 0, out + errors
        assert json.loads(out.strip().splitlines()[-1])["leaves_written"] == n
        sink.send_signal(signal.SIGTERM)
        output = sink.communicate(timeout=60)[0].decode()
        assert sink.returncode == 0, output
    finally:
        for child in (sink, follow):
            if child is not None and child.poll() is None:
                child.kill()
    # the store is free now: read it directly
    expected = assert_store_tree_is_exact(settings, n)
    witness, cli_env = tmp_path / "witness", dict(service_env)
    assert_witness_checks_alone(witness, cli_env, expected, n)
    ring = signing.ledger_key(settings).keyring()
    # re-export after a key rotation: nothing new, and the old key stays in keys.json
    old_kid = ring.keys.keys()
    signing.rotate(signing.key_dir(settings))
    again = subprocess.run([*CLI, "checkpoints", "export", str(witness), "--json"],
                           env=cli_env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert (second["heads_written"], second["leaves_written"]) == (0, 0)
    assert set(old_kid) < set(second["key_ids"]) and len(second["key_ids"]) == 2
    assert_ledger_verifies(witness, cli_env, n)  # no false alarm after kill -9 and restart
