"""The engine's half of the sink's Merkle logs: a batch's leaves hashed, folded into
aligned blocks and recorded in ``ledger_leaves``, in ClickHouse.

Why in the engine: the sink is bound by Python (one interpreter lock) at about 34 µs an
event, and building each leaf in Python (its bytes, its sha256, the frontier append, the
``ledger_leaves`` row) cost about half as much again. The engine holds the rows already
and works off the interpreter lock; the sink folds what it returns into one root per
aligned perfect subtree of the batch (:func:`agentledger.core.merkle.aligned_pieces`,
about 2·log2 n of them), which
:meth:`~agentledger.core.merkle.CompactRange.append_subtree` adds to the frontier.

Two ways, the first whenever it applies:

- *As the rows land* (:func:`landing_comment`, :func:`landed_roots`): the sink names the
  batch in the ``events`` insert's ``log_comment``; two views
  (``schemas/clickhouse/026_ledger_read_back.sql``) write the leaf records and the roots
  of the batch's whole blocks of :data:`BLOCK` leaves from the inserted rows themselves,
  so nothing is read twice and only an eighth of a node per leaf is hashed here. Needs
  every span's kept offsets contiguous (a leaf's index is then its offset's distance
  from the span's first one).
- *Read back* (:func:`subtree_roots`, :func:`insert_leaves`): a batch with a gap, or
  whose landing record is missing or split. What it trusts, and checks: the rows at a
  batch's offsets are the rows the sink inserted a moment before. Every offset of the
  span must hold exactly one distinct row, and as many as the sink judged leaves, or
  the write fails (and is retried, then stops the sink loudly) rather than signing
  something else. A row equal to the inserted one (a retried insert, a crashed flush's
  leftover) is the same leaf.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.core import merkle
from agentledger.core.merkle_levels import HASH, Levels


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
    careful: bool = False
    """its offsets hold identical copies of rows (set when read back)"""

    def __post_init__(self) -> None:
        self.pieces = merkle.aligned_pieces(self.base, self.leaves)

    @property
    def contiguous(self) -> bool:
        """No offset between its first and last was dropped: leaf i is at first + i."""
        return self.last - self.first + 1 == self.leaves


class ReadBackMismatch(RuntimeError):
    """The store's rows at a batch's offsets are not the leaves the sink judged."""


# Per-span values are arrays parallel to ``partitions``, picked by the row's partition.
_SPAN: Final = "indexOf({partitions:Array(UInt16)}, kafka_partition)"
_IN_SPANS: Final = (
    "kafka_offset BETWEEN {lo:UInt64} AND {hi:UInt64} "
    "AND has({partitions:Array(UInt16)}, kafka_partition) "
    f"AND kafka_offset >= {{firsts:Array(UInt64)}}[{_SPAN}] "
    f"AND kafka_offset <= {{lasts:Array(UInt64)}}[{_SPAN}]")



def _leaves_of_spans(database: str, careful: bool) -> str:
    """Per span: its offsets, its rows, and its leaf hashes in offset order (hex).

    ``careful`` reads distinct rows, for a span whose offsets hold more rows than offsets
    (identical copies left by a retried or crashed write): it costs a hash set of whole
    rows, so the common case does without it."""
    leaves = ("arraySort(groupUniqArray((kafka_offset, " + merkle.LEAF_SQL + ")))"
              if careful else
              "arrayZip(arraySort(groupArray(kafka_offset)), arraySort((h, o) -> o, "
              "groupArray(" + merkle.LEAF_SQL + "), groupArray(kafka_offset)))")
    rows = "uniqExact(kafka_offset, event_id, tenant, run_id, hash)" if careful else "count()"
    return ("SELECT kafka_partition, uniqExact(kafka_offset), " + rows + ", "
            "arrayStringConcat(arrayMap(x -> hex(x.2), " + leaves + ")) FROM "
            + database + ".events WHERE " + _IN_SPANS + " GROUP BY kafka_partition")


def _insert_leaves(database: str, careful: bool, contiguous: bool) -> str:
    """Leaf ``i`` of a span is its ``i``-th kept offset: the offset's distance from the
    first one when no offset between was dropped, its rank otherwise."""
    index = ("kafka_offset - {firsts:Array(UInt64)}[" + _SPAN + "]" if contiguous else
             "row_number() OVER (PARTITION BY kafka_partition ORDER BY kafka_offset) - 1")
    return (
        "INSERT INTO " + database + ".ledger_leaves (log_id, leaf_index, event_id, tenant, "
        "run_id, event_hash, kafka_offset) "
        "SELECT {logs:Array(String)}[" + _SPAN + "], "
        "{bases:Array(UInt64)}[" + _SPAN + "] + " + index + ", "
        "toString(event_id), tenant, run_id, hash, kafka_offset "
        "FROM (SELECT " + ("DISTINCT " if careful else "") + "kafka_partition, "
        "kafka_offset, event_id, tenant, run_id, hash FROM " + database + ".events WHERE "
        + _IN_SPANS + ")")


def _bounds(spans: Sequence[Span]) -> dict[str, Any]:
    return {"lo": min(s.first for s in spans), "hi": max(s.last for s in spans),
            "partitions": [s.partition for s in spans],
            "firsts": [s.first for s in spans], "lasts": [s.last for s in spans],
            "leaf_prefix": merkle.LEAF_SQL_PREFIX}


def _read_leaves(client: Client, database: str, spans: Sequence[Span], careful: bool
                 ) -> dict[int, tuple[int, int, bytes]]:
    found = client.query(_leaves_of_spans(database, careful), parameters=_bounds(spans))
    return {int(p): (int(offsets), int(rows), bytes.fromhex(leaves))
            for p, offsets, rows, leaves in found.result_rows}


def subtree_roots(client: Client, database: str, spans: Sequence[Span]
                  ) -> dict[int, list[bytes]]:
    """Each span's piece roots, left to right (partition → roots), once its offsets were
    found to hold exactly the judged leaves; :class:`ReadBackMismatch` otherwise.

    The engine reads and hashes the leaves; the pieces are folded here, one ``hashlib``
    call a node in a tight loop per level (:class:`~agentledger.core.merkle_levels.Levels`),
    which measured cheaper than the same folding in SQL (nested ``arrayMap``: about twice
    the CPU, and taken from the core the sink's interpreter runs beside)."""
    found = _read_leaves(client, database, spans, careful=False)
    if any(offsets != rows for offsets, rows, _ in found.values()):
        for span in spans:
            span.careful = True
        found = _read_leaves(client, database, spans, careful=True)
    roots: dict[int, list[bytes]] = {}
    for span in spans:
        offsets, rows, leaves = found.get(span.partition, (0, 0, b""))
        if not offsets == rows == span.leaves == len(leaves) // HASH:
            raise ReadBackMismatch(
                f"{span.log_id} offsets {span.first}..{span.last}: the store holds {rows} "
                f"distinct rows at {offsets} offsets, the sink judged {span.leaves} leaves")
        roots[span.partition] = piece_roots(span, leaves)
    return roots


def piece_roots(span: Span, leaves: bytes) -> list[bytes]:
    """The roots of a span's aligned pieces, from its leaf hashes in order."""
    return [Levels(leaves[start * HASH:(start + (1 << height)) * HASH]).root(1 << height)
            for start, height in span.pieces]


def landing_comment(batch: str, spans: Sequence[Span]) -> str | None:
    """The ``log_comment`` that makes the engine's views hash and record a batch's leaves
    as its ``events`` rows are inserted (``schemas/clickhouse/026_ledger_read_back.sql``),
    or None when a span's kept offsets are not contiguous (its leaf indexes are ranks,
    which the views cannot number; :func:`subtree_roots` and :func:`insert_leaves` do)."""
    if not spans or not all(s.contiguous for s in spans):
        return None
    return json.dumps({"ledger_batch": batch, "partitions": [s.partition for s in spans],
                       "logs": [s.log_id for s in spans], "bases": [s.base for s in spans],
                       "firsts": [s.first for s in spans]})


BLOCK: Final = 8
"""leaves per block whose root the landing view computes (``026_ledger_read_back.sql``)"""


def landed_roots(client: Client, database: str, batch: str, spans: Sequence[Span]
                 ) -> dict[int, list[bytes]] | None:
    """Each span's piece roots from what the landing view recorded for ``batch``, or None
    unless it recorded each span once, whole (a retried insert may have recorded a span
    in several parts; the caller then reads the leaves back instead)."""
    found: dict[int, set[tuple[int, int, int, str, str]]] = {}
    for partition, *row in client.query(
            "SELECT kafka_partition, first_offset, last_offset, leaves, block_roots, "
            "edge_leaves FROM " + database + ".ledger_landing WHERE batch = {batch:String}",
            parameters={"batch": batch}).result_rows:
        found.setdefault(int(partition), set()).add(
            (int(row[0]), int(row[1]), int(row[2]), str(row[3]), str(row[4])))
    roots: dict[int, list[bytes]] = {}
    for span in spans:
        records = found.get(span.partition, set())
        if len(records) != 1:
            return None
        first, last, leaves, blocks, edges = records.pop()
        if (first, last, leaves) != (span.first, span.last, span.leaves):
            return None
        folded = fold_blocks(span, bytes.fromhex(blocks), bytes.fromhex(edges))
        if folded is None:
            return None
        roots[span.partition] = folded
    return roots


def fold_blocks(span: Span, blocks: bytes, edges: bytes) -> list[bytes] | None:
    """A span's piece roots from the roots of its whole aligned blocks of :data:`BLOCK`
    leaves and the leaves of its partial blocks (first the one it starts in, then the one
    it ends in), or None if their sizes do not fit the span. A piece of at least a block
    is a fold of block roots; a smaller one lies in a partial block (pieces are aligned),
    so it is a fold of edge leaves."""
    base, end = span.base, span.base + span.leaves
    whole_from = -(-base // BLOCK)
    head_end = min(end, whole_from * BLOCK)
    tail_from = max(head_end, end // BLOCK * BLOCK)
    whole = max(0, tail_from // BLOCK - whole_from)
    if len(blocks) != whole * HASH or len(edges) != (head_end - base + end - tail_from) * HASH:
        return None
    height_of_block = BLOCK.bit_length() - 1
    roots = []
    for start, height in span.pieces:
        first = base + start
        size = 1 << height
        if height >= height_of_block:
            at = first // BLOCK - whole_from
            part = blocks[at * HASH:(at + size // BLOCK) * HASH]
            size //= BLOCK
        elif first + size <= head_end:
            part = edges[(first - base) * HASH:(first - base + size) * HASH]
        elif first >= tail_from:
            at = head_end - base + first - tail_from
            part = edges[at * HASH:(at + size) * HASH]
        else:
            return None
        roots.append(Levels(part).root(size))
    return roots


def insert_leaves(client: Client, database: str, spans: Sequence[Span]) -> None:
    """Record the spans' leaves in ``ledger_leaves`` (index, event, offset), as the engine
    read them for :func:`subtree_roots` (which must have run: it says whether copies of
    rows need setting aside)."""
    careful = any(s.careful for s in spans)
    contiguous = all(s.contiguous for s in spans)
    client.command(_insert_leaves(database, careful, contiguous), parameters={
        **_bounds(spans), "logs": [s.log_id for s in spans],
        "bases": [s.base for s in spans]})
