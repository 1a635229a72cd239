"""One panel's query result, and how to read its column types and time values.

Shared by the panel check (``check.py``), the figures of the report (``figures.py``) and
the alert rules' check (``alerts.py``); rows come either from the ledger API (JSON: times
are ISO strings) or from a ClickHouse client (times are ``datetime``), so every reader of a
time goes through :func:`utc`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from agentledger.dashboards.panels import Panel


@dataclass(frozen=True)
class PanelResult:
    panel: Panel
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    error: str | None = None


def is_time(type_name: str) -> bool:
    return type_name.startswith(("DateTime", "Date", "Nullable(DateTime"))


def is_number(type_name: str) -> bool:
    return any(t in type_name for t in ("Int", "Float", "Decimal"))


def utc(value: Any) -> dt.datetime:
    """A DateTime cell as an aware UTC datetime (naive values are UTC: the ledger's rule)."""
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    else:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


def utc_text(value: Any) -> str:
    """The form Plotly reads as a date without shifting it to the viewer's time zone."""
    return utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
