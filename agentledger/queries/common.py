"""Shared by every query: errors, the caller's tenant scope, time ranges, bound filters."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client


class QueryError(ValueError):
    """The request cannot be answered as asked (HTTP 400); the message says why."""


class NotFound(LookupError):
    """Nothing the caller may see matches (HTTP 404)."""


class Forbidden(PermissionError):
    """The caller's key does not cover what was asked (HTTP 403)."""


@dataclass(frozen=True)
class Scope:
    """The tenants a caller may read; ``None`` means all of them (an operator key)."""

    tenants: frozenset[str] | None

    def narrow(self, tenant: str | None) -> Scope:
        """The scope limited to ``tenant`` if one was asked for; Forbidden if not ours."""
        if tenant is None:
            return self
        if self.tenants is not None and tenant not in self.tenants:
            raise Forbidden(f"this key may not read tenant {tenant!r}")
        return Scope(frozenset({tenant}))


ALL = Scope(None)

_RELATIVE = re.compile(r"^(\d{1,6})\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """``7d``, ``24h``, ``30m`` (ago), ``now``, an ISO date or datetime → aware UTC."""
    if text is None or text == "":
        return None
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value.lower())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"not a time: {text!r} (use 7d, 24h, 30m, now, or an ISO date/datetime)") from None
    if not 1900 <= parsed.year <= 2261:
        raise QueryError(f"time out of range: {text!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class Where:
    """A WHERE clause built from fixed SQL fragments and bound parameters."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, fragment: str, **params: Any) -> Where:
        self.clauses.append(fragment)
        self.params.update(params)
        return self

    def equals(self, column: str, value: Any, type_: str = "String") -> Where:
        if value is not None:
            self.add(f"{column} = {{{column}:{type_}}}", **{column: value})
        return self

    def scope(self, scope: Scope, column: str = "tenant") -> Where:
        if scope.tenants is not None:
            self.add(f"{column} IN {{scope_tenants:Array(String)}}",
                     scope_tenants=sorted(scope.tenants))
        return self

    def between(self, column: str, since: dt.datetime | None, until: dt.datetime | None,
                type_: str = "DateTime64(6, 'UTC')") -> Where:
        if since is not None:
            self.add(f"{column} >= {{since:{type_}}}", since=since)
        if until is not None:
            self.add(f"{column} < {{until:{type_}}}", until=until)
        if since is not None and until is not None and since >= until:
            raise QueryError("the time range is empty: since must be before until")
        return self

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1"


def rows(client: Client, sql: str, params: dict[str, Any], *,
         max_seconds: float = 30) -> list[dict[str, Any]]:
    """Run one read-only query; rows as dicts."""
    result = client.query(sql, parameters=params or None, settings={
        "readonly": 2, "max_execution_time": max_seconds})
    names = result.column_names
    return [{name: _utc(value) for name, value in zip(names, row, strict=True)}
            for row in result.result_rows]


def _utc(value: Any) -> Any:
    """Every DateTime column of the ledger is UTC; say so on the way out."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value

