"""Inclusion proofs for a run: its last event is in the latest signed head of its log.

The run's hash chain makes its last event's hash cover every earlier event, so one leaf
(``core.merkle.leaf_input(tenant, run_id, event_id, last_hash)``) in a signed head proves
the whole run was in the ledger when the head was signed. ``verify RUN`` and the replay
bundle carry :func:`run_inclusion`: the leaf, its index, the RFC 9162 audit path (hex,
O(log n)) and the signed head, so :mod:`agentledger.core.offline` (or any language with
sha256 and ed25519) checks a bundle with the ledger's public key alone.

The path is computed from the tree recomputed from the store (:mod:`ledger_verify`), one
read of the log's leaf hashes; a proof that does not lead to the signed root is reported
as such, never repaired. Sibling hashes are hashes of other tenants' leaves: they reveal
nothing but that those leaves exist.
"""

from __future__ import annotations

from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.core import merkle
from agentledger.core.merkle_levels import HASH, Levels
from agentledger.queries import ledger_verify as lv
from agentledger.queries.common import Scope, Where, rows

FORMAT: Final = "agentledger.inclusion.v1"


def latest_head(client: Client, log: str) -> lv.Head | None:
    if not client.query("EXISTS TABLE checkpoints").result_rows[0][0]:
        return None
    found = client.query(
        "SELECT log_id, tree_size, root_hash, toUnixTimestamp64Milli(issued_at), key_id, "
        "signature FROM checkpoints WHERE log_id = {log:String} "
        "ORDER BY tree_size DESC, issued_at DESC LIMIT 1", parameters={"log": log}).result_rows
    if not found:
        return None
    r = found[0]
    return lv.Head(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]), str(r[5]))


def run_inclusion(client: Client, scope: Scope, run_id: str,
                  cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inclusion proof of ``run_id``'s last event against its log's latest signed head.

    ``status``: ``included`` (with ``proof`` and ``head``), ``pending`` (landed after the
    latest head: the next one covers it), ``unavailable`` (no signed head for the log, as
    before checkpointing was enabled) or ``absent`` (the event is not a leaf of the tree
    recomputed from the store). ``cache`` (one dict per request) keeps each log's tree
    for the next run of the same request (a trace's runs share logs)."""
    where = Where().scope(scope).add("run_id = {run:String}", run=run_id)
    last = rows(client, "SELECT kafka_partition, kafka_offset, toString(event_id) AS eid, "
                        "tenant, run_id, hash FROM events WHERE " + where.sql() +
                " ORDER BY seq DESC, kafka_offset LIMIT 1", where.params)
    if not last:
        return {"format": FORMAT, "status": "absent", "run_id": run_id}
    event = last[0]
    log = lv.log_id(int(event["kafka_partition"]))
    leaf = {"tenant": str(event["tenant"]), "run_id": str(event["run_id"]),
            "event_id": str(event["eid"]), "event_hash": str(event["hash"])}
    base: dict[str, Any] = {"format": FORMAT, "log_id": log, "leaf": leaf}
    head = latest_head(client, log)
    if head is None:
        return {**base, "status": "unavailable"}
    cache = {} if cache is None else cache
    key = f"{log}@{head.tree_size}"
    if key not in cache:
        store = lv.read_log(client, int(event["kafka_partition"]))
        cache[key] = (store.leaves, Levels(store.leaves[:head.tree_size * HASH])
                      if head.tree_size <= store.size else None)
    leaves, levels = cache[key]
    index = _find(leaves, merkle.leaf_hash(merkle.leaf_input(**leaf)))
    if index is None:
        return {**base, "status": "absent"}
    if index >= head.tree_size:
        return {**base, "status": "pending", "leaf_index": index, "head": _head(head)}
    if levels is None:  # the store holds fewer leaves than the head: verify --ledger says
        return {**base, "status": "absent", "leaf_index": index, "head": _head(head)}
    proof = levels.inclusion_proof(index, head.tree_size)
    return {**base, "status": "included", "leaf_index": index,
            "tree_size": head.tree_size, "proof": [p.hex() for p in proof],
            "head": _head(head)}


def vanished_run(client: Client, scope: Scope, run_id: str) -> dict[str, Any] | None:
    """For a run with no events in the store: the sink's leaf record of it, as a failed
    verification (a deleted run used to look exactly like one that never existed), or
    None if the ledger never had it either. The record is scoped like the events (another
    tenant's run is still a 404) and is only a hint: ``verify --ledger`` is the proof."""
    if not client.query("EXISTS TABLE ledger_leaves").result_rows[0][0]:
        return None
    where = Where().scope(scope).add("run_id = {run:String}", run=run_id)
    found = rows(client, "SELECT log_id, count() AS n, argMin(event_id, leaf_index) AS first "
                         f"FROM ledger_leaves FINAL WHERE {where.sql()} GROUP BY log_id",
                 where.params)
    if not found:
        return None
    leaves = sum(int(r["n"]) for r in found)
    problem = (f"deleted: the sink landed {leaves} event(s) of this run as leaves of "
               f"{found[0]['log_id']}, the store holds none of them; run "
               "`agentledger verify --ledger` to see what else changed")
    return {"ref": run_id, "ok": False, "runs": [{
        "run_id": run_id, "ok": False, "events": 0, "broken_seq": None,
        "broken_event_id": str(found[0]["first"]), "problem": problem}]}


def _find(leaves: bytes, wanted: bytes) -> int | None:
    """The index of leaf hash ``wanted`` (a C-speed scan of the packed hashes)."""
    at = leaves.find(wanted)
    while at != -1 and at % HASH:
        at = leaves.find(wanted, at + 1)
    return None if at == -1 else at // HASH


def _head(head: lv.Head) -> dict[str, Any]:
    return {k: v for k, v in head.to_dict().items() if k != "source"}
