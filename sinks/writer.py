"""The write step: batches are inserted on a thread, in order, while the next is decoded.

Guarantee: a batch comes back from :meth:`WriteStep.done` only after ClickHouse
acknowledged its rows and Kafka acknowledged its dead letters; batches come back in the
order they were submitted, so committing them in that order never skips one. One batch
is queued behind the one being written (backpressure: :meth:`submit` blocks, running
``while_waiting`` so the loop can still commit). A failing insert is retried with backoff
(``backoff_s``); when every attempt failed, the error is handed back and nothing after it
is written, so its offsets are never committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from agentledger.sinks.clickhouse import Batch

log = logging.getLogger(__name__)

_STOP = object()
WRITE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


class Writer(Protocol):
    def write(self, batch: Batch) -> None: ...


class DeadLetterQueue(Protocol):
    def flush(self, timeout_s: float = 30) -> None: ...


class WriteFailed(RuntimeError):
    """A batch was not written; its offsets must not be committed."""


class WriteStep:
    def __init__(self, writer: Writer, dead_letters: DeadLetterQueue, *,
                 backoff_s: tuple[float, ...] = WRITE_BACKOFF_S):
        self.writer = writer
        self.dead_letters = dead_letters
        self.backoff_s = backoff_s
        self.retries = 0
        self.in_flight = 0
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._written: queue.Queue[Batch | BaseException] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch, while_waiting: Callable[[], None]) -> None:
        self.in_flight += 1
        while True:
            try:
                self._pending.put(batch, timeout=0.2)
                return
            except queue.Full:
                while_waiting()

    def done(self, block: bool = False, timeout_s: float = 60) -> Iterator[Batch]:
        """Written batches, oldest first; with ``block``, until none is in flight."""
        while self.in_flight:
            try:
                item = self._written.get(timeout=timeout_s if block else 0)
            except queue.Empty:
                if block:
                    raise TimeoutError(f"ClickHouse insert did not finish in {timeout_s}s") \
                        from None
                return
            self.in_flight -= 1
            if isinstance(item, BaseException):
                raise WriteFailed(f"batch not written, offsets not committed: {item}") from item
            yield item

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._pending.put(_STOP, timeout=5)
        except queue.Full:
            # The writer died with a batch queued (its error is what stopped the loop):
            # blocking here would hang the process instead of letting it exit uncommitted.
            return
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            batch = self._pending.get()
            if batch is _STOP:
                return
            try:
                self.dead_letters.flush()
                self._write_with_retries(batch)
            except BaseException as exc:  # handed to the loop, which stops uncommitted
                self._written.put(exc)
                return
            self._written.put(batch)

    def _write_with_retries(self, batch: Batch) -> None:
        for pause in (*self.backoff_s, None):
            try:
                self.writer.write(batch)
                return
            except Exception as exc:
                if pause is None or self._stopping.is_set():
                    raise
                self.retries += 1
                log.warning("insert failed; retrying", extra={"error": str(exc)[:500],
                                                              "retry_in_s": pause})
                time.sleep(pause)  # backoff before the next attempt, not synchronisation
