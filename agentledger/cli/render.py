"""What the CLI prints: tables, ``--json`` output, and errors as one readable line.

Every command prints through :data:`out` (stdout) and :data:`err` (stderr); a
:class:`UserError`, and the other errors :func:`known_errors` lists, become ``error: …``
and exit code 1 instead of a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from agentledger.json_encoding import json_default

out = Console()
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 160  # piped or captured output: wide tables rather than truncated cells
err = Console(stderr=True)

NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?$")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=json_default) + "\n")


def show(result: Any, as_json: bool, title: str | None = None) -> None:
    """A SQL result (:class:`agentledger.queries.sql.QueryResult`) as a table or JSON."""
    if as_json:
        print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return
    if not result.rows and title:
        out.print(f"{title}: none", highlight=False)
        return
    shown = Table(title=title, title_justify="left")
    for name, kind in zip(result.columns, result.types, strict=True):
        numeric = any(t in kind for t in ("Int", "Float", "Decimal"))
        shown.add_column(name, justify="right" if numeric else "left")
    for row in result.rows:
        shown.add_row(*("" if v is None else (f"{v:,.4f}" if isinstance(v, float) else str(v))
                        for v in row))
    out.print(shown)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, list | dict):
        return json.dumps(value)[:80]
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None,
          empty: str = "nothing found") -> None:
    """Rows of an API answer as a table; numeric columns right-aligned."""
    if not rows:
        out.print(f"{title + ': ' if title else ''}{empty}", highlight=False)
        return
    shown = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        values = [r.get(column) for r in rows if r.get(column) not in (None, "")]
        numeric = bool(values) and all(
            (isinstance(v, int | float) and not isinstance(v, bool))
            or (isinstance(v, str) and NUMBER.match(v)) for v in values)
        shown.add_column(column, justify="right" if numeric else "left", no_wrap=i == 0)
    for row in rows:
        shown.add_row(*(cell(row.get(c)) for c in columns))
    out.print(shown)


def known_errors() -> tuple[type[BaseException], ...]:
    """The errors a command may end with that are the user's to fix (or the world's):
    printed as one line."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from confluent_kafka import KafkaException
    from pydantic import ValidationError

    from agentledger.api_client import LedgerError
    from agentledger.auth import KeyConfigError
    from agentledger.broker import BrokerNotFound
    from agentledger.core.dead_letters import DeadLetterFailed
    from agentledger.core.store import StoreBusy
    from agentledger.producers.emitter import BufferFull, DeliveryFailed
    from agentledger.queries.sql import QueryRefused
    from agentledger.streams.control_policy import PolicyError

    return (UserError, PolicyError, BrokerNotFound, StoreBusy, QueryRefused, LedgerError,
            KeyConfigError, BufferFull,
            DeliveryFailed, DeadLetterFailed, ClickHouseError, KafkaException, ValidationError,
            TimeoutError, RuntimeError, OSError)


def print_error(exc: BaseException) -> None:
    """``error: <the first line>``; invalid settings name their AGENTLEDGER_* variable."""
    from pydantic import ValidationError

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ValidationError):
        message = "invalid settings: " + "; ".join(
            f"AGENTLEDGER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors())
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
