"""``verify --ledger``: recompute every log's Merkle tree from the stored events and hold
it to every signed head, in the store and in a witness copy (docs/integrity.md).

Why recompute from ``events`` rather than trust ``ledger_leaves``: the leaves table is in
the same database an attacker can write, so it proves nothing by itself. The tree is
rebuilt from what queries actually read: per log (``agent.events/<partition>``), one leaf
per ``event_id`` at its first landed copy (lowest offset), in offset order, each leaf
``core.merkle.leaf_input(tenant, run_id, event_id, hash)``. The leaf hashes are computed by
the engine (``SHA256`` over the same bytes, so only 32 bytes a leaf cross into Python);
the tree is built level by level in one tight ``hashlib`` loop per level, and every
head's root, inclusion and consistency proof is read off those levels in O(log n).

What is checked, per log:

- every head (the store's ``checkpoints`` and the witness's) is signed by a known ledger
  key (purpose ``agentledger.checkpoint.v1``): a head the key did not sign is *forged*;
- the recomputed tree has the head's root at the head's size, and successive heads are
  consistent (an RFC 9162 consistency proof from the recomputed tree, checked);
- two different event ids never claim one Kafka offset (an inserted row).

When a head no longer matches, the store side of the window between the last head that
matched and the first that did not is returned; :func:`name_difference` compares it with
the witness's leaves (which the witnessed roots authenticate) and names the first leaf
that differs: deleted, inserted, altered or reordered. The witness is read by the
verifier, never sent to the store: the store only answers "what do you hold".

Leaves landed after the latest signed head are not protected yet (the sink signs a head
every few seconds); they are counted as ``uncovered``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.core import checkpoint, merkle, signing
from agentledger.core.merkle_levels import HASH, Levels
from agentledger.schemas import topics

WINDOW_MAX: Final = 200_000
"""Store leaves returned to name a difference at most (the window between two heads)."""


def log_id(partition: int) -> str:
    return f"{topics.EVENTS}/{partition}"


def partition_of(log: str) -> int:
    topic, _, part = log.rpartition("/")
    if topic != topics.EVENTS or not part.isdigit():
        raise ValueError(f"not a log of {topics.EVENTS}: {log!r}")
    return int(part)


# -- heads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head(checkpoint.SignedHead):
    """A signed tree head (:class:`~agentledger.core.checkpoint.SignedHead`), from the
    store or from a witness (``source``)."""

    source: str = "store"

    def signed_by(self, keyring: signing.Keyring) -> bool:
        return checkpoint.verify_head(self, keyring)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "witness") -> Head:
        """A head as ``checkpoints export`` writes it; ValueError/KeyError/TypeError on a
        malformed record."""
        signed = checkpoint.SignedHead.from_dict(data)
        return cls(signed.log_id, signed.tree_size, signed.root_hash, signed.issued_at_ms,
                   signed.key_id, signed.signature, source)


def store_heads(client: Client) -> list[Head]:
    """Every head in the store's ``checkpoints`` table (none if it does not exist)."""
    exists = client.query("EXISTS TABLE checkpoints").result_rows[0][0]
    if not exists:
        return []
    found = client.query(
        "SELECT DISTINCT log_id, tree_size, root_hash, toUnixTimestamp64Milli(issued_at), "
        "key_id, signature FROM checkpoints ORDER BY log_id, tree_size").result_rows
    return [Head(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]), str(r[5]))
            for r in found]


# -- the store's leaves ----------------------------------------------------------------------

_LEAVES: Final = (
    f"SELECT kafka_offset, {merkle.LEAF_SQL} AS leaf FROM events "
    "WHERE kafka_partition = {p:UInt16} "
    "ORDER BY kafka_offset, event_id LIMIT 1 BY event_id")
# With the sink's leaf records: an event's position is the lowest offset it was seen at,
# in events or as the sink recorded its leaf. A producer's retry lands a second copy at a
# later offset and the replacing merge may keep that one; the leaf is still where the
# first copy landed. Positions only order the leaves, whose contents come from events,
# so a position moved by hand changes the root like any other reordering.
_LEAVES_HINTED: Final = (
    "SELECT least(e.o, ifNull(l.o, e.o)) AS kafka_offset, e.leaf AS leaf FROM ("
    f" SELECT event_id, min(kafka_offset) AS o, argMin({merkle.LEAF_SQL}, kafka_offset) AS leaf"
    " FROM events WHERE kafka_partition = {p:UInt16} AND kafka_offset >= {start:UInt64}"
    " GROUP BY event_id) AS e "
    "LEFT JOIN (SELECT toUUIDOrZero(event_id) AS event_id, min(kafka_offset) AS o "
    " FROM ledger_leaves WHERE log_id = {log:String} GROUP BY event_id) AS l "
    "USING event_id ORDER BY kafka_offset, e.event_id "
    "SETTINGS join_use_nulls = 1")


def store_partitions(client: Client) -> list[int]:
    return [int(r[0]) for r in client.query(
        "SELECT DISTINCT kafka_partition FROM events ORDER BY kafka_partition").result_rows]


@dataclass
class StoreLog:
    """One log as the store holds it now: leaf hashes in order and their offsets."""

    log_id: str
    leaves: bytes
    offsets: Any  # numpy uint64, ascending
    collisions: list[int]

    @property
    def size(self) -> int:
        return len(self.offsets)


def first_offset(client: Client, log: str) -> int:
    """Where the log begins: the offset of the sink's leaf 0. Events landed before the
    sink kept logs (a ledger upgraded in place) are not leaves. Moving it by hand adds or
    drops leading leaves, which changes every root like any other edit."""
    found = client.query("SELECT min(kafka_offset) FROM ledger_leaves WHERE "
                         "log_id = {log:String} AND leaf_index = 0",
                         parameters={"log": log}).result_rows
    return int(found[0][0]) if found and found[0][0] is not None else 0


def read_log(client: Client, partition: int) -> StoreLog:
    """The leaves of one partition's log, recomputed by the engine from ``events``."""
    log = log_id(partition)
    hinted = client.query("EXISTS TABLE ledger_leaves").result_rows[0][0]
    table = client.query_arrow(_LEAVES_HINTED if hinted else _LEAVES, parameters={
        "leaf_prefix": merkle.LEAF_SQL_PREFIX, "p": partition, "log": log,
        "start": first_offset(client, log) if hinted else 0})
    leaf = table.column("leaf").combine_chunks()
    raw = leaf.buffers()[1].to_pybytes()[leaf.offset * HASH:(leaf.offset + len(leaf)) * HASH]
    offsets = table.column("kafka_offset").to_numpy()
    collisions = sorted({int(o) for o in offsets[1:][offsets[1:] == offsets[:-1]]})
    return StoreLog(log_id(partition), raw, offsets, collisions)


def window(client: Client, log: str, offsets: Sequence[int], lo: int, hi: int
           ) -> list[dict[str, Any]]:
    """The store's leaves ``[lo, hi)`` of ``log`` with what they are (to name them)."""
    hi = min(hi, len(offsets), lo + WINDOW_MAX)
    if hi <= lo:
        return []
    found = client.query(
        "SELECT kafka_offset, toString(event_id), tenant, run_id, hash, seq FROM events "
        "WHERE kafka_partition = {p:UInt16} AND kafka_offset >= {a:UInt64} "
        "AND kafka_offset <= {b:UInt64} ORDER BY kafka_offset, event_id LIMIT 1 BY event_id",
        parameters={"p": partition_of(log), "a": int(offsets[lo]), "b": int(offsets[hi - 1])}
    ).result_rows
    return [{"index": lo + i, "kafka_offset": int(r[0]), "event_id": r[1], "tenant": r[2],
             "run_id": r[3], "event_hash": r[4], "seq": int(r[5])}
            for i, r in enumerate(found[:hi - lo])]


# -- checking --------------------------------------------------------------------------------


MAX_PROBLEMS: Final = 10
"""Problems listed per log and kind at most (the counts are always complete)."""


def check_log(store: StoreLog, heads: Iterable[Head], keyring: signing.Keyring
              ) -> dict[str, Any]:
    """Hold one log's recomputed tree to its heads (store's and witness's, any order).

    Every head's root is compared (O(log n) each); signatures, ~0.1 ms each, are checked
    where they matter: the latest head of each source (which covers every leaf before
    it) and every head that does not match, so a head nobody signed is called forged
    rather than evidence. A log may have millions of heads (one every few seconds).
    """
    levels = Levels(store.leaves)
    ordered = sorted(heads, key=lambda h: (h.tree_size, h.source != "witness"))
    latest = {h.source: h for h in ordered}
    counts = {"ok": 0, "forged": 0, "short": 0, "mismatch": 0}
    problems: list[str] = []
    shown: list[dict[str, Any]] = []
    last_good: Head | None = None
    first_bad: Head | None = None
    previous_good: Head | None = None
    for head in ordered:
        verdict = "ok"
        if head.tree_size > store.size:
            verdict = "short"
        elif levels.root(head.tree_size).hex() != head.root_hash:
            verdict = "mismatch"
        if (verdict != "ok" or latest.get(head.source) is head) and \
                not head.signed_by(keyring):
            verdict = "forged"
        counts[verdict] += 1
        if verdict == "ok":
            if first_bad is None:
                previous_good, last_good = last_good, head
            if latest.get(head.source) is head:
                shown.append(_entry(head, verdict))
            continue
        first_bad = first_bad or (head if verdict != "forged" else None)
        shown.append(_entry(head, verdict))
        if counts[verdict] <= MAX_PROBLEMS:
            problems.append(_problem(head, verdict, store.size))
    if previous_good is not None and last_good is not None and \
            previous_good.tree_size < last_good.tree_size:
        proof = levels.consistency_proof(previous_good.tree_size, last_good.tree_size)
        if not merkle.verify_consistency(  # pragma: no cover - both roots matched
                previous_good.tree_size, last_good.tree_size,
                bytes.fromhex(previous_good.root_hash), bytes.fromhex(last_good.root_hash),
                proof):
            problems.append(f"{store.log_id}: heads {previous_good.tree_size} and "
                            f"{last_good.tree_size} are not consistent")
    for kind, n in counts.items():
        if kind != "ok" and n > MAX_PROBLEMS:
            problems.append(f"{store.log_id}: {n - MAX_PROBLEMS} more {kind} heads")
    for offset in store.collisions[:MAX_PROBLEMS]:
        problems.append(f"{store.log_id}: two different events claim offset {offset} "
                        "(one was inserted)")
    covered = max((h.tree_size for h in ordered if h.source == "store"), default=0)
    result: dict[str, Any] = {
        "log_id": store.log_id, "leaves": store.size, "heads": len(ordered),
        "heads_ok": counts["ok"], "verdicts": counts,
        "covered": min(covered, store.size), "uncovered": max(store.size - covered, 0),
        "root": levels.root(store.size).hex(), "ok": not problems, "problems": problems,
        "checked": shown[:100]}
    if first_bad is not None:
        lo = last_good.tree_size if last_good is not None else 0
        result["window"] = {"lo": lo, "hi": first_bad.tree_size, "last_good": lo,
                            "first_bad": first_bad.tree_size}
    return result


def _entry(head: Head, verdict: str) -> dict[str, Any]:
    return {"source": head.source, "tree_size": head.tree_size,
            "root_hash": head.root_hash, "verdict": verdict}


def _problem(head: Head, verdict: str, size: int) -> str:
    if verdict == "forged":
        return (f"{head.log_id}: the {head.source}'s head at size {head.tree_size} is not "
                f"signed by a known ledger key (key id {head.key_id or '?'})")
    if verdict == "short":
        return (f"{head.log_id}: the {head.source}'s signed head covers {head.tree_size} "
                f"leaves, the store holds {size}")
    return (f"{head.log_id}: the tree recomputed from the store does not have the "
            f"{head.source}'s signed root at size {head.tree_size}")


def since_filter(heads: Sequence[Head], since_ms: int | None) -> list[Head]:
    """The heads issued at or after ``since_ms``, and per source the last one before (the
    anchor the first later head must be consistent with)."""
    if since_ms is None:
        return list(heads)
    kept = [h for h in heads if h.issued_at_ms >= since_ms]
    for source in {h.source for h in heads}:
        before = [h for h in heads if h.source == source and h.issued_at_ms < since_ms]
        if before:
            kept.append(max(before, key=lambda h: (h.tree_size, h.issued_at_ms)))
    return kept


def verify_ledger(client: Client, keyring: signing.Keyring,
                  witness_heads: Sequence[Head] = (), *, since_ms: int | None = None,
                  with_windows: bool = True) -> dict[str, Any]:
    """Recompute every log and hold it to the store's and ``witness_heads``' signed heads.

    Each log that fails carries ``window``: its first failing head and the last one that
    held; with ``with_windows`` also ``store_window``, the store's leaves between them (at
    most :data:`WINDOW_MAX`), for :func:`name_difference`."""
    started = time.monotonic()
    heads: dict[str, list[Head]] = {}
    for head in [*store_heads(client), *witness_heads]:
        heads.setdefault(head.log_id, []).append(head)
    parts = set(store_partitions(client))
    for log in heads:
        try:
            parts.add(partition_of(log))
        except ValueError:
            continue
    logs, failing = [], []
    order = sorted(parts)
    # The engine reads the next partition while Python hashes this one's tree: chdb and
    # the HTTP driver wait outside the GIL, so the two overlap on two cores. Only this
    # one reader thread touches the client until every log is read.
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_log, client, order[0]) if order else None
        for position in range(len(order)):
            assert pending is not None
            store = pending.result()
            pending = reader.submit(read_log, client, order[position + 1]) \
                if position + 1 < len(order) else None
            result = check_log(store, since_filter(heads.get(store.log_id, []), since_ms),
                               keyring)
            if with_windows and "window" in result:
                failing.append((result, store.offsets))
            logs.append(result)
            del store
    for result, offsets in failing:
        w = result["window"]
        result["store_window"] = window(client, result["log_id"], offsets, w["lo"], w["hi"])
    problems = [p for log in logs for p in log["problems"]]
    return {"ok": not problems, "logs": logs, "leaves": sum(g["leaves"] for g in logs),
            "heads": sum(g["heads"] for g in logs),
            "uncovered": sum(g["uncovered"] for g in logs), "problems": problems,
            "seconds": round(time.monotonic() - started, 3)}
