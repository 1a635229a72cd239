"""The engine's half of the sink's Merkle logs: a batch's leaves read back from ``events``,
hashed, folded into aligned subtrees and recorded in ``ledger_leaves``, all in ClickHouse.

Why in the engine: the sink is bound by Python (one interpreter lock) at about 34 µs an
event, and building each leaf in Python (its bytes, its sha256, the frontier append, the
``ledger_leaves`` row) cost about half as much again. The engine holds the rows already,
hashes them off the interpreter lock, and returns one hash per aligned perfect subtree of
the batch (:func:`agentledger.core.merkle.aligned_pieces`, about 2·log2 n of them), which
:meth:`~agentledger.core.merkle.CompactRange.append_subtree` folds into the frontier.

What the read-back trusts, and checks: the rows at a batch's offsets are the rows the sink
inserted a moment before. :func:`subtree_roots` counts them: every offset of the span must
hold exactly one distinct row, and as many as the sink judged leaves, or the write fails
(and is retried, then stops the sink loudly) rather than signing something else. A row at
those offsets that equals the inserted one (a retried insert, a crashed flush's leftover)
is the same leaf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.core import merkle


@dataclass
class Span:
    """One log's new leaves in a batch: the kept events of ``partition`` at offsets
    ``first``..``last``, appended to a tree of ``base`` leaves."""

    partition: int
    log_id: str
    first: int
    last: int
    base: int
    leaves: int
    pieces: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pieces = merkle.aligned_pieces(self.base, self.leaves)


class ReadBackMismatch(RuntimeError):
    """The store's rows at a batch's offsets are not the leaves the sink judged."""


# Per-span values are arrays parallel to ``partitions``, picked by the row's partition.
_SPAN: Final = "indexOf({partitions:Array(UInt16)}, kafka_partition)"
_IN_SPANS: Final = (
    "kafka_offset BETWEEN {lo:UInt64} AND {hi:UInt64} "
    "AND has({partitions:Array(UInt16)}, kafka_partition) "
    f"AND kafka_offset >= {{firsts:Array(UInt64)}}[{_SPAN}] "
    f"AND kafka_offset <= {{lasts:Array(UInt64)}}[{_SPAN}]")



def _leaves_of_spans(database: str) -> str:
    """Per partition: its offsets, its distinct rows, and its leaf hashes in offset order."""
    return ("SELECT kafka_partition AS p, uniqExact(kafka_offset) AS offsets, "
            "uniqExact(kafka_offset, event_id, tenant, run_id, hash) AS distinct_rows, "
            "arrayMap(x -> x.2, arraySort(groupUniqArray((kafka_offset, "
            + merkle.LEAF_SQL + ")))) AS l FROM " + database + ".events WHERE "
            + _IN_SPANS + " GROUP BY p")


# One pass halves every piece: node i of the next level hashes nodes 2i-1 and 2i
# (1-based) of this one; a piece already down to its root passes through.
_HALVE: Final = ("SELECT p, piece, offsets, distinct_rows, if(length(l) > 1, arrayMap(i -> "
                 "SHA256(concat(char(1), l[2 * i - 1], l[2 * i])), "
                 "range(1, intDiv(length(l), 2) + 1)), l) AS l FROM ({inner})")



def _insert_leaves(database: str) -> str:
    return (
        "INSERT INTO " + database + ".ledger_leaves (log_id, leaf_index, event_id, tenant, "
        "run_id, event_hash, kafka_offset, leaf_hash) "
        "SELECT {logs:Array(String)}[" + _SPAN + "], "
        "{bases:Array(UInt64)}[" + _SPAN + "] - 1 + "
        "row_number() OVER (PARTITION BY kafka_partition ORDER BY kafka_offset), "
        "toString(event_id), tenant, run_id, hash, kafka_offset, "
        "lower(hex(" + merkle.LEAF_SQL + ")) "
        "FROM (SELECT DISTINCT kafka_partition, kafka_offset, event_id, tenant, run_id, "
        "hash FROM " + database + ".events WHERE " + _IN_SPANS + ")")


def _bounds(spans: Sequence[Span]) -> dict[str, Any]:
    return {"lo": min(s.first for s in spans), "hi": max(s.last for s in spans),
            "partitions": [s.partition for s in spans],
            "firsts": [s.first for s in spans], "lasts": [s.last for s in spans],
            "leaf_prefix": merkle.LEAF_SQL_PREFIX}


def roots_sql(database: str, height: int) -> str:
    """The query that returns (partition, piece, offsets, distinct rows, root hex) for
    pieces of at most ``height`` levels."""
    at = "indexOf({partitions:Array(UInt16)}, p)"
    inner = ("SELECT p, piece, offsets, distinct_rows, arraySlice(l, start + 1, size) AS l "
             f"FROM (SELECT *, {{starts:Array(Array(UInt32))}}[{at}] AS starts, "
             f"{{sizes:Array(Array(UInt32))}}[{at}] AS sizes, arrayEnumerate(starts) AS "
             f"pieces FROM ({_leaves_of_spans(database)})) "
             "ARRAY JOIN starts AS start, sizes AS size, pieces AS piece")
    for _ in range(height):
        inner = _HALVE.format(inner=inner)
    return (f"SELECT p, piece, offsets, distinct_rows, lower(hex(l[1])) FROM ({inner}) "
            "ORDER BY p, piece")


def subtree_roots(client: Client, database: str, spans: Sequence[Span]
                  ) -> dict[int, list[bytes]]:
    """Each span's piece roots, left to right (partition → roots), once its offsets were
    found to hold exactly the judged leaves; :class:`ReadBackMismatch` otherwise."""
    height = max((h for s in spans for _, h in s.pieces), default=0)
    rows = client.query(roots_sql(database, height), parameters={
        **_bounds(spans),
        "starts": [[start for start, _ in s.pieces] for s in spans],
        "sizes": [[1 << h for _, h in s.pieces] for s in spans],
    }).result_rows
    roots: dict[int, list[bytes]] = {s.partition: [] for s in spans}
    found: dict[int, tuple[int, int]] = {}
    for partition, _piece, offsets, distinct_rows, root in rows:
        found[int(partition)] = (int(offsets), int(distinct_rows))
        roots[int(partition)].append(bytes.fromhex(root))
    for s in spans:
        offsets, distinct_rows = found.get(s.partition, (0, 0))
        if not offsets == distinct_rows == s.leaves or len(roots[s.partition]) != len(s.pieces):
            raise ReadBackMismatch(
                f"{s.log_id} offsets {s.first}..{s.last}: the store holds {distinct_rows} "
                f"distinct rows at {offsets} offsets, the sink judged {s.leaves} leaves")
    return roots


def insert_leaves(client: Client, database: str, spans: Sequence[Span]) -> None:
    """Record the spans' leaves in ``ledger_leaves`` (index, event, offset, leaf hash), as
    the engine read them for :func:`subtree_roots`."""
    client.command(_insert_leaves(database), parameters={
        **_bounds(spans),
        "logs": [s.log_id for s in spans], "bases": [s.base for s in spans]})
