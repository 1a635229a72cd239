"""An optional on-disk spool for the SDK: events survive a broker outage and a restart.

Without a spool, an event lives in librdkafka's memory until Kafka acknowledges it: a
broker outage longer than ``message.timeout.ms`` fails its delivery (``DeliveryFailed``
names it), and a crash of the agent process loses what was not yet acknowledged.

With a spool, :meth:`Spool.append` writes every event to an append-only segment file
*before* it is handed to the producer, and a segment is deleted only once Kafka has
acknowledged every event in it. A new ``Ledger`` on the same directory re-sends whatever
an earlier process left behind. Guarantees:

- **Process crash** (``kill -9``): nothing is lost: each record is one ``write()`` to the
  OS before ``emit`` returns.
- **Power loss**: records written since the last ``fsync`` may be lost; fsync is batched,
  every ``fsync_interval_s`` (default 0.2 s) and on :meth:`Spool.sync`.
- **Duplicates**: a segment is re-sent whole after a restart, so events acknowledged just
  before a crash may reach Kafka twice; they carry the same ``event_id`` and queries show
  them once.
- **Bounded**: past ``max_bytes`` on disk, :meth:`append` raises :class:`SpoolFull` (a
  ``BufferFull``), never grows without limit.

Record format: ``<u32 length><u32 crc32>`` then ``orjson([key, value, headers])``; a torn
record at the end of a segment (a crash mid-write) is ignored on replay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
Headers = list[tuple[str, str]]


class SpoolFull(RuntimeError):
    """The spool reached ``max_bytes``: Kafka has been unreachable for too long."""


@dataclass
class _Segment:
    path: Path
    size: int = 0
    unacked: int = 0
    closed: bool = False


class Spool:
    def __init__(self, directory: Path | str, *, max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = 16 * 1024 * 1024, fsync_interval_s: float = 0.2):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self._segments: dict[int, _Segment] = {}
        self._current: int | None = None
        self._fd: int | None = None
        self._dirty = False
        self._synced_at = time.monotonic()
        existing = sorted(self._ids())
        self._next_id = (existing[-1] + 1) if existing else 0
        self._leftover = existing

    def _ids(self) -> list[int]:
        return [int(p.stem.split("-")[1]) for p in self.directory.glob("segment-*.log")]

    def _path(self, segment_id: int) -> Path:
        return self.directory / f"segment-{segment_id:012d}.log"

    @property
    def bytes_on_disk(self) -> int:
        return sum(s.size for s in self._segments.values())

    @property
    def unacked(self) -> int:
        return sum(s.unacked for s in self._segments.values())

    # -- what an earlier process left ----------------------------------------------

    def replay(self) -> Iterator[tuple[int, bytes, bytes, Headers]]:
        """Records of segments left by an earlier process, oldest first, once each."""
        leftover, self._leftover = self._leftover, []
        for segment_id in leftover:
            path = self._path(segment_id)
            data = path.read_bytes()
            segment = self._segments[segment_id] = _Segment(path, len(data), closed=True)
            records = list(_records(data, path))
            segment.unacked = len(records)
            if not records:
                self._drop(segment_id)
            for key, value, headers in records:
                yield segment_id, key, value, headers

    # -- appending and acknowledging ----------------------------------------------------

    def append(self, key: bytes, value: bytes, headers: Headers) -> int:
        """Write one record; returns the segment id to acknowledge it with."""
        payload = orjson.dumps([key.decode(), value.decode(), headers])
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self.bytes_on_disk + len(record) > self.max_bytes:
            raise SpoolFull(f"SDK spool {self.directory} is full ({self.max_bytes} bytes of "
                            "events Kafka has not acknowledged): is Kafka reachable?")
        segment_id = self._writable(len(record))
        assert self._fd is not None
        os.write(self._fd, record)
        segment = self._segments[segment_id]
        segment.size += len(record)
        segment.unacked += 1
        self._dirty = True
        if time.monotonic() - self._synced_at >= self.fsync_interval_s:
            self.sync()
        return segment_id

    def ack(self, segment_id: int) -> None:
        """Kafka acknowledged one record of ``segment_id``."""
        segment = self._segments.get(segment_id)
        if segment is None:
            return
        segment.unacked -= 1
        if segment.closed and segment.unacked <= 0:
            self._drop(segment_id)

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._synced_at = time.monotonic()

    def roll(self) -> None:
        """Close the current segment (deleting it if everything in it was acknowledged)."""
        if self._current is None:
            return
        self.sync()
        assert self._fd is not None
        os.close(self._fd)
        segment_id, self._current, self._fd = self._current, None, None
        segment = self._segments[segment_id]
        segment.closed = True
        if segment.unacked <= 0:
            self._drop(segment_id)

    def close(self) -> None:
        self.roll()

    def _writable(self, size: int) -> int:
        current = self._current
        if current is not None and self._segments[current].size + size > self.segment_bytes:
            self.roll()
            current = None
        if current is None:
            current, self._next_id = self._next_id, self._next_id + 1
            path = self._path(current)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._segments[current] = _Segment(path)
            self._current = current
        return current

    def _drop(self, segment_id: int) -> None:
        segment = self._segments.pop(segment_id)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()


def _records(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes, Headers]]:
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size: offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("torn spool record ignored", extra={"path": str(path),
                                                            "offset": offset})
            return
        key, value, headers = orjson.loads(payload)
        yield key.encode(), value.encode(), [tuple(h) for h in headers]
        offset += _HEADER.size + length
