"""Identifiers: UUIDv7 event ids (time-ordered, so ClickHouse inserts stay local)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime


def uuid7() -> str:
    """RFC 9562 UUIDv7 as lowercase hyphenated text.

    os.urandom rather than the random module: forked agent workers must not share ids.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
