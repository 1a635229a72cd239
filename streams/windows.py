"""Event-time sliding windows made of hop buckets.

A window of ``window_s`` seconds sliding every ``hop_s`` is ``window_s / hop_s`` buckets;
adding a result touches one bucket and reading the window sums at most that many. This is
how the worker aggregates before writing state (docs/control-loop.md): nothing here is
a faust windowed table, so a result costs a dict lookup, not a changelog record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agentledger.schemas.signals import MAX_TRIGGER_IDS

_IDS_PER_BUCKET = 5


@dataclass(slots=True)
class Bucket:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    latencies: list[float] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    error_types: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WindowTotals:
    calls: int
    failures: int
    timeouts: int
    p95_latency_ms: float
    failed_ids: tuple[str, ...]

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class HopWindow:
    """Results of one scope (a tool, an agent...) bucketed by ``hop_s`` of event time."""

    __slots__ = ("buckets", "hop_s", "n_buckets")

    def __init__(self, window_s: int, hop_s: int):
        self.hop_s = hop_s
        self.n_buckets = window_s // hop_s
        self.buckets: dict[int, Bucket] = {}

    def bucket_of(self, ts: float) -> int:
        return int(ts // self.hop_s)

    def add(self, ts: float, *, failed: bool, timeout: bool = False, latency_ms: float = 0.0,
            event_id: str = "", error_type: str = "") -> None:
        b = self.buckets.get(idx := self.bucket_of(ts))
        if b is None:
            b = self.buckets[idx] = Bucket()
        b.calls += 1
        b.latencies.append(latency_ms)
        if failed:
            b.failures += 1
            b.timeouts += timeout
            if error_type:
                b.error_types[error_type] = b.error_types.get(error_type, 0) + 1
            if len(b.failed_ids) >= _IDS_PER_BUCKET:  # keep the latest: they triggered it
                del b.failed_ids[0]
            b.failed_ids.append(event_id)

    def totals(self, now: float) -> WindowTotals:
        """Sum of the window ending with the bucket that holds ``now``."""
        last = self.bucket_of(now)
        calls = failures = timeouts = 0
        latencies: list[float] = []
        ids: list[str] = []
        for idx in range(last - self.n_buckets + 1, last + 1):
            b = self.buckets.get(idx)
            if b is None:
                continue
            calls += b.calls
            failures += b.failures
            timeouts += b.timeouts
            latencies.extend(b.latencies)
            ids.extend(b.failed_ids)
        return WindowTotals(calls, failures, timeouts, p95(latencies),
                            tuple(ids[-MAX_TRIGGER_IDS:]))

    def prune(self, now: float) -> None:
        """Drop buckets that can no longer be part of any window at or after ``now``."""
        oldest = self.bucket_of(now) - self.n_buckets
        for idx in [i for i in self.buckets if i <= oldest]:
            del self.buckets[idx]

    def clear(self) -> None:
        self.buckets.clear()

    def __bool__(self) -> bool:
        return bool(self.buckets)


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class CountWindow:
    """Calls and failures of one scope per ``hop_s`` bucket, for decisions: no latencies,
    so reading a window is a sum of a few integer pairs. Buckets are kept for
    ``keep_s`` (the longest window plus allowed lateness) behind the newest one."""

    __slots__ = ("buckets", "hop_s", "ids", "keep", "newest")

    def __init__(self, hop_s: int, keep_s: float):
        self.hop_s = hop_s
        self.keep = int(keep_s // hop_s) + 1
        self.buckets: dict[int, list[int]] = {}
        self.ids: dict[int, list[str]] = {}
        self.newest = float("-inf")
        """Time of the newest result added ("did it call lately?" without a sum)."""

    def add(self, ts: float, failed: bool, event_id: str = "") -> None:
        if ts > self.newest:
            self.newest = ts
        idx = int(ts // self.hop_s)
        b = self.buckets.get(idx)
        if b is None:
            b = self.buckets[idx] = [0, 0]
            if len(self.buckets) > self.keep + 8:
                self.prune(ts)
        b[0] += 1
        if failed:
            b[1] += 1
            ids = self.ids.get(idx)
            if ids is None:
                ids = self.ids[idx] = []
            if len(ids) >= _IDS_PER_BUCKET:
                del ids[0]
            ids.append(event_id)

    def totals(self, now: float, window_s: int, after: float | None = None
               ) -> tuple[int, int]:
        """(calls, failures) of the ``window_s`` ending with the bucket holding ``now``;
        with ``after``, only the buckets after the one holding ``after``."""
        last = int(now // self.hop_s)
        first = last - window_s // self.hop_s + 1
        if after is not None:
            first = max(first, int(after // self.hop_s) + 1)
        calls = failures = 0
        get = self.buckets.get
        for idx in range(first, last + 1):
            b = get(idx)
            if b is not None:
                calls += b[0]
                failures += b[1]
        return calls, failures

    def failed_ids(self, now: float, window_s: int) -> tuple[str, ...]:
        """The latest failed event ids of that window (they triggered the decision)."""
        last = int(now // self.hop_s)
        ids: list[str] = []
        for idx in range(last - window_s // self.hop_s + 1, last + 1):
            ids.extend(self.ids.get(idx, ()))
        return tuple(ids[-MAX_TRIGGER_IDS:])

    def prune(self, now: float) -> None:
        oldest = int(now // self.hop_s) - self.keep
        for idx in [i for i in self.buckets if i <= oldest]:
            del self.buckets[idx]
            self.ids.pop(idx, None)

    def clear(self) -> None:
        self.buckets.clear()
        self.ids.clear()
        self.newest = float("-inf")

    def __bool__(self) -> bool:
        return bool(self.buckets)
