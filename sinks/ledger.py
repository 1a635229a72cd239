"""The sink's Merkle logs: every event it lands becomes a leaf, and heads get signed.

One append-only log per ``agent.events`` partition (``log_id = "agent.events/<p>"``),
leaves in landing (offset) order, each leaf ``merkle.leaf_input(tenant, run_id,
event_id, hash)`` (docs/integrity.md, "Signed checkpoints"). Only the compact range (the
frontier: one hash per set bit of the size) is kept in memory; the leaves are written to
``ledger_leaves`` for the witness and for naming a differing leaf.

Guarantees, and the order that provides them (:meth:`LedgerWriter.write`, on the sink's
writer thread, before the loop commits the batch's offsets):

1. the batch is judged (:meth:`LedgerLogs.plan`: which events become leaves), and its
   ``events`` rows, less copies of existing leaves, are inserted;
2. its new leaves are inserted into ``ledger_leaves``, and where the dropped copies of
   leaves were into ``duplicate_copies`` (so ``reconcile`` accounts for their offsets);
3. each touched log's state (frontier, size, next offset covered) is inserted into
   ``ledger_state``;
4. when due, a signed head per log goes to ``checkpoints`` and then to the compacted
   ``agentledger.checkpoints`` topic;
5. only then does the loop commit the offsets (``sinks/consumer.py``).

- *Exact under redelivery.* A message below the log's persisted ``next_offset`` is
  already judged (a crash between 3 and 5 re-reads it): it is never appended again. An
  event whose ``event_id`` is already a leaf of the log (a producer retry at another
  offset, a duplicate within the batch) is not a second leaf: the store is asked, per
  batch, which of the batch's ids are leaves below the persisted size (``ledger_leaves``
  is ordered by event id, and UUIDv7 ids keep that lookup on the newest granules). Such a
  copy is not inserted into ``events`` either (:meth:`LedgerLogs.plan`): the replacing
  merge keeps the *last* inserted copy of a key, which would move the event to the later
  offset in a tree recomputed from ``events`` (``verify --ledger``). A re-read of an
  offset the state covers is dropped too: the flush that covered it stored it.
- *kill -9 safe.* In-memory state changes only after 3 succeeded. A crash before 3 leaves
  the persisted state at the previous flush: the batch is read again from the committed
  offsets and judged again identically (leaf rows at or beyond the persisted size are
  leftovers and are rewritten with the same index and content). A crash after 3 and
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
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from agentledger.core import checkpoint, merkle
from agentledger.core.signing import LedgerKey
from agentledger.schemas.event_row import EVENT_COLUMNS
from agentledger.sinks.clickhouse import Batch, ClickHouseWriter

log = logging.getLogger(__name__)

_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_ID, _TENANT, _RUN, _HASH = _COL["event_id"], _COL["tenant"], _COL["run_id"], _COL["hash"]
_PART, _OFF = _COL["kafka_partition"], _COL["kafka_offset"]

LEAF_COLUMNS = ("log_id", "leaf_index", "event_id", "tenant", "run_id", "event_hash",
                "kafka_offset", "leaf_hash")
STATE_COLUMNS = ("log_id", "next_offset", "tree_size", "frontier")
COPY_COLUMNS = ("kafka_partition", "kafka_offset", "event_id")
HEAD_COLUMNS = ("log_id", "tree_size", "root_hash", "issued_at", "key_id", "signature")

Entry = tuple[int, int, str, str, str, str]
"""(partition, offset, event_id, tenant, run_id, event hash) of one landed event."""


def entries_of(rows: Iterable[Sequence[Any]]) -> list[Entry]:
    """The leaf material of a batch's ``events`` rows (taken before they are released)."""
    return [(int(r[_PART]), int(r[_OFF]), str(r[_ID]).lower(), str(r[_TENANT]), str(r[_RUN]),
             str(r[_HASH])) for r in rows]


@dataclass
class LogState:
    tree: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    next_offset: int = 0
    head_size: int = 0
    uncovered_since: float | None = None
    """monotonic time the oldest leaf not yet under a signed head landed"""


class RecentIds:
    """The event ids of a log's newest leaves, and the largest id of any older leaf.

    Why: asking the store about every event of every batch cost more than the rest of
    checkpointing together. An id greater than every leaf id no longer held here
    (``evicted_max``) cannot be an older leaf (equal ids compare equal), so only ids not
    held here and not above ``evicted_max`` are looked up: with UUIDv7 ids (time-ordered)
    that is a retry of an event older than the window, nearly never. Exact for any id;
    ids that are not time-ordered only cost more lookups.
    """

    def __init__(self, capacity: int, evicted_max: str = ""):
        self.capacity = capacity
        self.evicted_max = evicted_max
        self.ids: set[str] = set()
        self._order: deque[str] = deque()

    def must_ask(self, event_id: str) -> bool:
        return event_id not in self.ids and event_id <= self.evicted_max

    def add(self, ids: Iterable[str]) -> None:
        for event_id in ids:
            self.ids.add(event_id)
            self._order.append(event_id)
        while len(self._order) > self.capacity:
            old = self._order.popleft()
            self.ids.discard(old)
            self.evicted_max = max(self.evicted_max, old)


@dataclass
class LedgerStats:
    leaves: int = 0
    duplicates: int = 0
    already_covered: int = 0
    lookups: int = 0
    """event ids the store was asked about (older than the in-memory window)"""
    heads: int = 0
    publish_failures: int = 0


@dataclass
class Plan:
    """What one batch does to the logs, computed before anything is written."""

    keep: list[bool]
    leaf_rows: list[list[Any]] = field(default_factory=list)
    copy_rows: list[list[Any]] = field(default_factory=list)
    """Dropped copies of leaves: where they were (``duplicate_copies``, for reconcile)."""
    state_rows: list[list[Any]] = field(default_factory=list)
    updated: dict[str, LogState] = field(default_factory=dict)
    new_ids: dict[str, list[str]] = field(default_factory=dict)
    leaves: int = 0
    duplicates: int = 0
    already_covered: int = 0


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

    # -- appending -----------------------------------------------------------------------

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

    def plan(self, entries: list[Entry]) -> Plan:
        """Judge a batch's events (nothing is written or changed here).

        An entry is *kept* (its ``events`` row inserted) only if it becomes a leaf. A copy
        of a leaf at another offset is dropped: inserted, it could replace the first copy
        in the replacing merge and so move the event in a tree recomputed from
        ``events``. An offset an earlier flush covered was stored by that flush (step 1
        precedes step 3), so it is dropped too.
        """
        plan = Plan(keep=[False] * len(entries))
        by_log: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            by_log.setdefault(entry[0], []).append(position)
        for partition, positions in sorted(by_log.items()):
            log_id = checkpoint.log_id(partition)
            state = self.logs.get(log_id) or LogState()
            recent = self.recent.get(log_id) or RecentIds(self.recent_capacity)
            positions.sort(key=lambda i: entries[i][1])
            fresh = [i for i in positions if entries[i][1] >= state.next_offset]
            plan.already_covered += len(positions) - len(fresh)
            if not fresh:
                continue
            ask = list({entries[i][2] for i in fresh if recent.must_ask(entries[i][2])})
            known = self._known(log_id, state.tree.size, ask)
            tree = state.tree.copy()
            new_ids: list[str] = []
            for i in fresh:
                _p, offset, event_id, tenant, run_id, event_hash = entries[i]
                if event_id in known or event_id in recent.ids:
                    plan.duplicates += 1
                    plan.copy_rows.append([partition, offset, event_id])
                    continue
                known.add(event_id)
                new_ids.append(event_id)
                plan.keep[i] = True
                leaf = merkle.leaf_hash(merkle.leaf_input(tenant, run_id, event_id,
                                                          event_hash))
                plan.leaf_rows.append([log_id, tree.size, event_id, tenant, run_id,
                                       event_hash, offset, leaf.hex()])
                tree.append(leaf)
                plan.leaves += 1
            last = entries[fresh[-1]][1]
            plan.state_rows.append([log_id, last + 1, tree.size,
                                    orjson.dumps(tree.to_dict()).decode()])
            plan.updated[log_id] = LogState(tree, last + 1, state.head_size,
                                            state.uncovered_since)
            plan.new_ids[log_id] = new_ids
        return plan

    def commit(self, plan: Plan) -> None:
        """Persist a plan's leaves, then its states (steps 2, 3); then move the in-memory
        state (a retry before this point recomputes nothing different)."""
        if plan.leaf_rows:
            self.client.insert(f"{self.db}.ledger_leaves", plan.leaf_rows,
                               column_names=LEAF_COLUMNS)
        if plan.copy_rows:
            self.client.insert(f"{self.db}.duplicate_copies", plan.copy_rows,
                               column_names=COPY_COLUMNS)
        if plan.state_rows:
            self.client.insert(f"{self.db}.ledger_state", plan.state_rows,
                               column_names=STATE_COLUMNS)
        now = time.monotonic()
        for log_id, state in plan.updated.items():
            current = self.logs.get(log_id)
            if current is not None and current.next_offset >= state.next_offset:
                continue  # this plan was committed already (a retried write)
            if state.tree.size > state.head_size and state.uncovered_since is None:
                state.uncovered_since = now
            self.logs[log_id] = state
            self.recent.setdefault(log_id, RecentIds(self.recent_capacity)).add(
                plan.new_ids.get(log_id, []))
            self.stats.leaves += state.tree.size - (current.tree.size if current else 0)
        self.stats.duplicates += plan.duplicates
        self.stats.already_covered += plan.already_covered

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
            plan = self.logs.plan(entries_of(batch.events))
            if not all(plan.keep):
                batch.events = [row for row, keep in zip(batch.events, plan.keep, strict=True)
                                if keep]
            self._plans[id(batch)] = plan
        self.inner.write(batch)
        self.logs.commit(plan)
        self.logs.sign_due()
        del self._plans[id(batch)]


class TopicPublisher:
    """Heads to the compacted ``agentledger.checkpoints`` topic, keyed by log id (the
    latest per log survives compaction; the table keeps every head)."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 10.0):
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def __call__(self, heads: list[checkpoint.SignedHead]) -> None:
        for head in heads:
            self.producer.produce(self.topic, key=head.log_id.encode(),
                                  value=orjson.dumps(head.to_dict()))
        if self.producer.flush(self.timeout_s) > 0:
            raise TimeoutError(f"{len(heads)} heads not acknowledged in {self.timeout_s}s")
