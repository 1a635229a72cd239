"""The sink's Merkle logs: every event it lands becomes a leaf, and heads get signed.

One append-only log per ``agent.events`` partition (``log_id = "agent.events/<p>"``),
leaves in landing (offset) order, each leaf ``merkle.leaf_input(tenant, run_id,
event_id, hash)`` (docs/integrity.md, "Signed checkpoints"). Only the compact range (the
frontier: one hash per set bit of the size) is kept in memory; the leaves are recorded in
``ledger_leaves`` for the witness and for naming a differing leaf. Python only judges
which rows become leaves; the engine hashes them and folds them into aligned subtrees
(:mod:`agentledger.sinks.ledger_engine`), so the frontier takes O(log n) hashes a batch.

Guarantees, and the order that provides them (:meth:`LedgerWriter.write`, on the sink's
writer thread, before the loop commits the batch's offsets):

1. the batch is judged (:meth:`LedgerLogs.plan`: which events become leaves), and its
   ``events`` rows, less copies of existing leaves, are inserted;
2. the engine's views recorded its leaves (``ledger_leaves``) and their block roots
   with that insert; for a batch they cannot number, the engine reads the leaves back
   from ``events`` (refusing offsets that hold other rows than the judged ones) and
   records them now; where the dropped copies of leaves were goes to
   ``duplicate_copies`` (so ``reconcile`` accounts for their offsets);
3. each touched log's state (frontier, size, next offset covered) is inserted into
   ``ledger_state``;
4. when due, a signed head per log goes to ``checkpoints`` and then to the compacted
   ``agentledger.checkpoints`` topic;
5. only then does the loop commit the offsets (``sinks/consumer.py``).

- *Exact under redelivery.* A message below the log's persisted ``next_offset`` is
  already judged (a crash between 3 and 5 re-reads it): it is never appended again. An
  event whose ``event_id`` is already a leaf of the log (a producer retry at another
  offset, a duplicate within the batch) is not a second leaf: ids held in the recent
  window (:class:`~agentledger.sinks.recent_ids.RecentIds`) are known, and the store is
  asked about the rare older one whether it is a leaf below the persisted size
  (``ledger_leaves`` is ordered by event id, so that lookup reads few granules). Such a
  copy is not inserted into ``events`` either (:meth:`LedgerLogs.plan`): the replacing
  merge keeps the *last* inserted copy of a key, which would move the event to the later
  offset in a tree recomputed from ``events`` (``verify --ledger``). A re-read of an
  offset the state covers is dropped too: the flush that covered it stored it.
- *kill -9 safe.* In-memory state changes only after 3 succeeded. A crash before 3 leaves
  the persisted state at the previous flush: the batch is read again from the committed
  offsets and judged again identically (leaf rows at or beyond the persisted size, and
  ``events`` rows at offsets beyond its next offset, are leftovers and are rewritten
  with the same index and content). A crash after 3 and
  before 5 re-reads offsets the state already covers, which are skipped. So the tree
  state and the committed offsets always agree: the state covers at least every
  committed offset, and exactly what the store holds up to its ``next_offset``.
- *Timely.* A head is due for a log once its oldest uncovered leaf is
  ``checkpoint_interval_seconds`` old or ``checkpoint_interval_events`` leaves are
  uncovered, whichever comes first; the sink flushes at least every batch age /
  ``sink_status_seconds``, so landing → covered is bounded by the interval plus one
  flush (bench/bench_integrity.py measures it).

Rejected offsets are not leaves (they never reach ``events``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from agentledger.core import checkpoint, merkle
from agentledger.core.signing import LedgerKey
from agentledger.schemas.event_row import EVENT_COLUMNS
from agentledger.sinks.clickhouse import Batch, ClickHouseWriter
from agentledger.sinks.ledger_engine import (
    Span,
    insert_leaves,
    landed_roots,
    landing_comment,
    subtree_roots,
)
from agentledger.sinks.recent_ids import RecentIds

log = logging.getLogger(__name__)

_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_ID, _PART, _OFF = _COL["event_id"], _COL["kafka_partition"], _COL["kafka_offset"]
_id_of, _partition_of, _offset_of = itemgetter(_ID), itemgetter(_PART), itemgetter(_OFF)

STATE_COLUMNS = ("log_id", "next_offset", "tree_size", "frontier")
COPY_COLUMNS = ("kafka_partition", "kafka_offset", "event_id")
HEAD_COLUMNS = ("log_id", "tree_size", "root_hash", "issued_at", "key_id", "signature")


@dataclass
class LogState:
    tree: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    next_offset: int = 0
    head_size: int = 0
    uncovered_since: float | None = None
    """monotonic time the oldest leaf not yet under a signed head landed"""


@dataclass
class LedgerStats:
    leaves: int = 0
    duplicates: int = 0
    already_covered: int = 0
    lookups: int = 0
    """event ids the store was asked about (older than the in-memory window)"""
    heads: int = 0
    publish_failures: int = 0
    read_back: int = 0
    """batches whose leaves the engine read back from events (the views could not
    number them, ``ledger_engine.landing_comment``) rather than recorded as they landed"""


@dataclass
class LogPlan:
    """What one batch does to one log: the span of its new leaves, and what follows."""

    span: Span
    next_offset: int
    new_ids: set[str]


@dataclass
class Plan:
    """What one batch does to the logs, judged before anything is written."""

    keep: list[bool] | None = None
    """which rows to insert; None when every row is a new leaf (the common case)"""
    logs: list[LogPlan] = field(default_factory=list)
    copy_rows: list[list[Any]] = field(default_factory=list)
    """Dropped copies of leaves: where they were (``duplicate_copies``, for reconcile)."""
    covered_only: dict[str, int] = field(default_factory=dict)
    """logs whose rows in the batch were all covered already: log → next offset"""
    leaves: int = 0
    duplicates: int = 0
    already_covered: int = 0
    batch: str = field(default_factory=lambda: uuid.uuid4().hex)
    landing: str | None = None
    """the ``log_comment`` of the ``events`` insert when the engine's views record the
    batch's leaves as it lands (``ledger_engine.landing_comment``), else None"""


class LedgerLogs:
    """The per-partition logs of one sink (state in memory, persisted per flush)."""

    def __init__(self, client: Client, database: str, key: LedgerKey, *,
                 interval_s: float = 2.0, interval_events: int = 100_000,
                 recent_ids: int = 50_000,
                 publish: Callable[[list[checkpoint.SignedHead]], None] | None = None):
        self.client = client
        self.db = database
        self.key = key
        self.interval_s = interval_s
        self.interval_events = interval_events
        self.publish = publish
        self.stats = LedgerStats()
        self.logs: dict[str, LogState] = {}
        self.recent_capacity = recent_ids
        self.recent: dict[str, RecentIds] = {}
        self.load()

    def load(self) -> None:
        """The persisted state of every log, and the size of its latest signed head."""
        self.logs.clear()
        rows = self.client.query(
            f"SELECT log_id, argMax(next_offset, next_offset), argMax(frontier, next_offset) "
            f"FROM {self.db}.ledger_state GROUP BY log_id").result_rows
        now = time.monotonic()
        for log_id, next_offset, frontier in rows:
            tree = merkle.CompactRange.from_dict(orjson.loads(frontier))
            self.logs[str(log_id)] = LogState(tree, int(next_offset))
        for log_id, size in self.client.query(
                f"SELECT log_id, max(tree_size) FROM {self.db}.checkpoints "
                "GROUP BY log_id").result_rows:
            state = self.logs.get(str(log_id))
            if state is not None:
                state.head_size = int(size)
        for state in self.logs.values():
            if state.tree.size > state.head_size:
                state.uncovered_since = now
        self.recent = {str(log_id): RecentIds(self.recent_capacity, str(top))
                       for log_id, top in self.client.query(
                           f"SELECT log_id, max(event_id) FROM {self.db}.ledger_leaves "
                           "GROUP BY log_id").result_rows}

    # -- judging -------------------------------------------------------------------------

    def _known(self, log_id: str, size: int, ids: list[str]) -> set[str]:
        """Which of ``ids`` are leaves of ``log_id`` already (below the persisted size)."""
        if not ids or size == 0:
            return set()
        self.stats.lookups += len(ids)
        rows = self.client.query(
            f"SELECT DISTINCT event_id FROM {self.db}.ledger_leaves "
            "WHERE log_id = {log:String} AND event_id IN {ids:Array(String)} "
            "AND leaf_index < {size:UInt64}",
            parameters={"log": log_id, "ids": ids, "size": size}).result_rows
        return {str(r[0]) for r in rows}

    def plan(self, rows: Sequence[Sequence[Any]]) -> Plan:
        """Judge a batch's ``events`` rows (nothing is written or changed here).

        A row is *kept* (inserted) only if it becomes a leaf. A copy of a leaf at another
        offset is dropped: inserted, it could replace the first copy in the replacing
        merge and so move the event in a tree recomputed from ``events``. An offset an
        earlier flush covered was stored by that flush (step 1 precedes step 3), so it is
        dropped too. Rows arrive in runs per partition (as fetched); each run is judged
        with set operations, and only a run holding a copy is judged row by row.
        """
        plan = Plan()
        partitions = list(map(_partition_of, rows))
        by_partition: dict[int, list[int]] = {}
        for partition, run in groupby(range(len(rows)), partitions.__getitem__):
            by_partition.setdefault(int(partition), []).extend(run)
        for partition, positions in sorted(by_partition.items()):
            log_id = checkpoint.log_id(partition)
            state = self.logs.get(log_id) or LogState()
            recent = self.recent.get(log_id) or RecentIds(self.recent_capacity)
            mine = rows if len(by_partition) == 1 else list(map(rows.__getitem__, positions))
            offsets = list(map(_offset_of, mine))
            ids = list(map(_id_of, mine))
            id_set = set(ids)
            known = recent.known(id_set)
            known |= self._known(log_id, state.tree.size, recent.must_ask(id_set - known))
            if min(offsets) >= state.next_offset and len(id_set) == len(ids) and not known:
                plan.logs.append(LogPlan(
                    Span(partition, log_id, min(offsets), max(offsets), state.tree.size,
                         len(ids)), max(offsets) + 1, id_set))
                plan.leaves += len(ids)
                continue
            self._judge_rows(plan, rows, positions, state, known, partition)
        plan.landing = landing_comment(plan.batch, [lp.span for lp in plan.logs])
        return plan

    def _judge_rows(self, plan: Plan, rows: Sequence[Sequence[Any]], positions: list[int],
                    state: LogState, known: set[str], partition: int) -> None:
        """One partition's rows judged one by one: some are covered, copies or both.
        ``known``: which of their ids are leaves already (asked once, in :meth:`plan`)."""
        log_id = checkpoint.log_id(partition)
        if plan.keep is None:
            plan.keep = [True] * len(rows)
        positions = sorted(positions, key=lambda i: rows[i][_OFF])
        fresh = []
        for i in positions:
            if rows[i][_OFF] >= state.next_offset:
                fresh.append(i)
            else:
                plan.keep[i] = False
        plan.already_covered += len(positions) - len(fresh)
        if not fresh:
            return
        new_ids: set[str] = set()
        kept: list[int] = []
        for i in fresh:
            event_id, offset = rows[i][_ID], rows[i][_OFF]
            if event_id in known or event_id in new_ids:
                plan.keep[i] = False
                plan.duplicates += 1
                plan.copy_rows.append([partition, offset, event_id])
                continue
            new_ids.add(event_id)
            kept.append(offset)
        next_offset = rows[fresh[-1]][_OFF] + 1
        if not kept:
            plan.covered_only[log_id] = next_offset
            return
        plan.logs.append(LogPlan(Span(partition, log_id, kept[0], kept[-1], state.tree.size,
                                      len(kept)), next_offset, new_ids))
        plan.leaves += len(kept)

    # -- writing -------------------------------------------------------------------------

    def commit(self, plan: Plan) -> None:
        """Steps 2 and 3 for a batch whose events are stored: its leaf hashes, as the
        engine's views recorded them while the rows landed (or, for a batch they could not
        number, as the engine reads them back and records them now), are folded into the
        trees; the dropped copies are recorded, then each log's state is persisted; only
        then does the in-memory state move (a retry before this point computes nothing
        different)."""
        spans = [lp.span for lp in plan.logs]
        trees: dict[str, merkle.CompactRange] = {}
        if spans:
            roots = (landed_roots(self.client, self.db, plan.batch, spans)
                     if plan.landing else None)
            if roots is None:
                self.stats.read_back += 1
                roots = subtree_roots(self.client, self.db, spans)
                if plan.landing is None:
                    insert_leaves(self.client, self.db, spans)
            for span in spans:
                state = self.logs.get(span.log_id) or LogState()
                tree = state.tree.copy()
                for (_start, height), root in zip(span.pieces, roots[span.partition],
                                                  strict=True):
                    tree.append_subtree(root, height)
                trees[span.log_id] = tree
        if plan.copy_rows:
            self.client.insert(f"{self.db}.duplicate_copies", plan.copy_rows,
                               column_names=COPY_COLUMNS)
        updated = {lp.span.log_id: (lp.next_offset, trees[lp.span.log_id], lp.new_ids)
                   for lp in plan.logs}
        for log_id, next_offset in plan.covered_only.items():
            current = self.logs.get(log_id) or LogState()
            updated[log_id] = (next_offset, current.tree.copy(), set())
        if updated:
            self.client.insert(f"{self.db}.ledger_state", [
                [log_id, next_offset, tree.size, orjson.dumps(tree.to_dict()).decode()]
                for log_id, (next_offset, tree, _ids) in updated.items()],
                column_names=STATE_COLUMNS)
        self._advance(updated)
        self.stats.duplicates += plan.duplicates
        self.stats.already_covered += plan.already_covered

    def _advance(self, updated: dict[str, tuple[int, merkle.CompactRange, set[str]]]) -> None:
        now = time.monotonic()
        for log_id, (next_offset, tree, new_ids) in updated.items():
            current = self.logs.get(log_id)
            if current is not None and current.next_offset >= next_offset:
                continue  # this plan was committed already (a retried write)
            state = LogState(tree, next_offset, current.head_size if current else 0,
                             current.uncovered_since if current else None)
            if tree.size > state.head_size and state.uncovered_since is None:
                state.uncovered_since = now
            self.logs[log_id] = state
            self.recent.setdefault(log_id, RecentIds(self.recent_capacity)).add(new_ids)
            self.stats.leaves += tree.size - (current.tree.size if current else 0)

    # -- heads ---------------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [log_id for log_id, s in self.logs.items()
                if s.tree.size > s.head_size and (
                    s.tree.size - s.head_size >= self.interval_events
                    or (s.uncovered_since is not None
                        and now - s.uncovered_since >= self.interval_s))]

    def sign_due(self, force: bool = False) -> list[checkpoint.SignedHead]:
        """Sign, store and publish a head for every log that is due (step 4)."""
        logs = [k for k, s in self.logs.items() if s.tree.size > s.head_size] if force \
            else self.due()
        if not logs:
            return []
        issued = time.time()
        issued_ms = int(issued * 1000)
        heads = [checkpoint.sign_head(self.key, log_id, self.logs[log_id].tree.size,
                                      self.logs[log_id].tree.root().hex(), issued_ms)
                 for log_id in sorted(logs)]
        self.client.insert(
            f"{self.db}.checkpoints",
            [[h.log_id, h.tree_size, h.root_hash,
              datetime.fromtimestamp(issued_ms / 1000, UTC), h.key_id, h.signature]
             for h in heads], column_names=HEAD_COLUMNS)
        for h in heads:
            state = self.logs[h.log_id]
            state.head_size = h.tree_size
            state.uncovered_since = None
        self.stats.heads += len(heads)
        if self.publish is not None:
            try:
                self.publish(heads)
            except Exception as exc:  # the table holds the heads; the next ones supersede
                self.stats.publish_failures += 1
                log.warning("checkpoints not published", extra={"error": str(exc)})
        return heads


class LedgerWriter:
    """The sink's writer with the Merkle logs behind it (steps 1 to 4 above, in order)."""

    def __init__(self, inner: ClickHouseWriter, logs: LedgerLogs):
        self.inner = inner
        self.logs = logs
        self._plans: dict[int, Plan] = {}

    def write(self, batch: Batch) -> None:
        """Steps 1 to 4. The plan is kept until the batch is fully written: a retried
        write (the writer retries the whole call) must not judge it again, since the
        insert releases the rows it was judged from."""
        plan = self._plans.get(id(batch))
        if plan is None:
            plan = self.logs.plan(batch.events)
            if plan.keep is not None:
                batch.events = [row for row, keep in zip(batch.events, plan.keep, strict=True)
                                if keep]
            self._plans[id(batch)] = plan
        self.inner.write(batch, {"log_comment": plan.landing} if plan.landing else None)
        self.logs.commit(plan)
        self.logs.sign_due()
        del self._plans[id(batch)]
