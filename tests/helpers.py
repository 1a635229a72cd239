"""Polling with a deadline (never sleep-as-synchronisation) and small builders."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 60, interval_s: float = 0.1,
             what: str = "condition", seen: Callable[[], object] | None = None) -> T:
    """Return the first truthy value of ``condition()``, or fail after ``timeout_s``
    saying what was last seen: ``condition()``'s value, and ``seen()`` when given (for a
    condition whose falsy value says nothing, e.g. the rows it looked at)."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    saw = f"; seen: {seen()!r}" if seen is not None else ""
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {what} (last: {last!r}{saw})")
