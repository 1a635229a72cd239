"""Expand a panel's SQL the way Grafana and the grafana-clickhouse-datasource plugin do.

Grafana first interpolates variables (here only the ``sqlstring`` format the panels use,
plus plain ``$name`` / ``${name}`` for non-SQL values); the plugin then replaces its
macros. Used by the panel check and by ``agentledger report``, so both run exactly the
SQL a Grafana server would send.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_MACRO_WITH_ARG = re.compile(r"\$__(timeFilter|timeFilter_ms|timeInterval|timeInterval_ms|"
                             r"dateFilter)\(([^)]*)\)")


class UnknownVariable(KeyError):
    pass


def sqlstring(values: Sequence[str]) -> str:
    """Grafana's ``sqlstring`` format: each value quoted, quotes doubled, comma-joined."""
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def interpolate(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name.startswith("__"):
            return match.group(0)  # a macro or a Grafana built-in, not a variable
        if name not in variables:
            raise UnknownVariable(name)
        value = variables[name]
        values = [value] if isinstance(value, str) else list(value)
        if match.group(2) == "sqlstring":
            return sqlstring(values)
        return ",".join(values)

    return _VARIABLE.sub(replace, sql)


def expand_macros(sql: str, time_from: dt.datetime, time_to: dt.datetime,
                  interval_s: int) -> str:
    start, end = int(time_from.timestamp()), int(time_to.timestamp())
    start_ms, end_ms = int(time_from.timestamp() * 1000), int(time_to.timestamp() * 1000)

    def with_arg(match: re.Match[str]) -> str:
        name, column = match.group(1), match.group(2).strip()
        if name == "timeFilter":
            return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
        if name == "timeFilter_ms":
            return (f"{column} >= fromUnixTimestamp64Milli({start_ms}) AND "
                    f"{column} <= fromUnixTimestamp64Milli({end_ms})")
        if name == "dateFilter":
            return (f"{column} >= toDate('{time_from.date()}') AND "
                    f"{column} <= toDate('{time_to.date()}')")
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({column}), INTERVAL {interval_s} second)"
        return (f"toStartOfInterval(toDateTime64({column}, 3), "
                f"INTERVAL {interval_s * 1000} millisecond)")

    sql = _MACRO_WITH_ARG.sub(with_arg, sql)
    return (sql.replace("$__interval_s", str(interval_s))
            .replace("$__fromTime", f"toDateTime({start})")
            .replace("$__toTime", f"toDateTime({end})"))


def expand(sql: str, *, time_from: dt.datetime, time_to: dt.datetime,
           variables: Mapping[str, str | Sequence[str]], max_points: int = 300) -> str:
    """Variables, then macros, with Grafana's interval for ``max_points`` points."""
    interval_s = interval_seconds(time_from, time_to, max_points)
    return expand_macros(interpolate(sql, variables), time_from, time_to, interval_s)


def interval_seconds(time_from: dt.datetime, time_to: dt.datetime, max_points: int = 300) -> int:
    """The bucket width ``$__interval_s`` takes for this range (what "per bucket" means)."""
    return max(1, int((time_to - time_from).total_seconds() // max_points))
