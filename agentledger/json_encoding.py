"""How the shell writes ClickHouse values as JSON: the API's responses and the CLI's --json.

Dates and datetimes as ISO 8601, UUIDs as strings, decimals as floats, bytes as UTF-8.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any


def json_default(value: Any) -> Any:
    """The ``default=`` hook of ``json.dumps`` and ``orjson.dumps`` for stored values."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(value).__name__}")
