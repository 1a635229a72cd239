"""Which event ids a log holds as its newest leaves, for the sink's duplicate check."""

from __future__ import annotations

from collections import deque


class RecentIds:
    """The event ids of a log's newest leaves, in whole batches, and the largest id of any
    older leaf.

    Why: asking the store about every event of every batch cost more than the rest of
    checkpointing together. An id greater than every leaf id no longer held here
    (``evicted_max``) cannot be an older leaf (equal ids compare equal), so only ids not
    held here and not above ``evicted_max`` are looked up: with UUIDv7 ids (time-ordered)
    that is a retry of an event older than the window, nearly never. Exact for any id;
    ids that are not time-ordered only cost more lookups. Whole batches, as sets, so that
    every check is a set operation in C rather than a Python step per event.
    """

    def __init__(self, capacity: int, evicted_max: str = ""):
        self.capacity = capacity
        self.evicted_max = evicted_max
        self.batches: deque[set[str]] = deque()
        self.held = 0

    def known(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` are held here."""
        found: set[str] = set()
        for held in self.batches:
            found |= ids & held
        return found

    def must_ask(self, ids: set[str]) -> list[str]:
        """Which of ``ids`` (none held here) might be older leaves."""
        if not ids or min(ids) > self.evicted_max:
            return []
        return [event_id for event_id in ids if event_id <= self.evicted_max]

    def add(self, ids: set[str]) -> None:
        self.batches.append(ids)
        self.held += len(ids)
        while self.held > self.capacity:
            old = self.batches.popleft()
            self.held -= len(old)
            if old:
                self.evicted_max = max(self.evicted_max, max(old))
