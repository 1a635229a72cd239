"""Read-only SQL for people: one statement, SELECT-like only, with row and time limits.

Two locks on the door: a statement check that gives a clear message, and ClickHouse's own
``readonly=2`` setting on execution, which refuses any write whatever the parser missed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

READ_KEYWORDS = ("select", "with", "show", "describe", "desc", "explain", "exists")
_STRINGS_AND_COMMENTS = re.compile(
    r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|--[^\n]*|#[^\n]*|/\*.*?\*/", re.S
)


class QueryRefused(ValueError):
    """The statement is not a single read-only query."""


def check_read_only(sql: str) -> str:
    """The statement without a trailing ';', or :class:`QueryRefused` saying why."""
    stripped = sql.strip().rstrip(";").strip()
    if not stripped:
        raise QueryRefused("empty query")
    bare = _STRINGS_AND_COMMENTS.sub(" ", stripped)
    if ";" in bare:
        raise QueryRefused("only one statement at a time")
    words = bare.split()
    first = words[0].lower().lstrip("(") if words else ""
    if first not in READ_KEYWORDS:
        raise QueryRefused(
            f"only read-only queries ({', '.join(k.upper() for k in READ_KEYWORDS)}) are "
            f"allowed, not {words[0].upper() if words else 'this'}"
        )
    return stripped


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows}


def run_read_only(client: Client, sql: str, parameters: dict[str, Any] | None = None, *,
                  max_rows: int = 10_000, max_seconds: float = 30) -> QueryResult:
    statement = check_read_only(sql)
    result = client.query(statement, parameters=parameters or None, settings={
        "readonly": 2,
        "max_result_rows": max_rows,
        "result_overflow_mode": "throw",
        "max_execution_time": max_seconds,
    })
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[list(r) for r in result.result_rows],
    )


# The ingestion summary `make demo` prints; every query reads through FINAL so redelivered
# duplicates never show.
SUMMARY_QUERIES = {
    "events by type": "SELECT event_type, count() AS events FROM events FINAL "
                      "GROUP BY event_type ORDER BY events DESC",
    "runs by outcome": "SELECT outcome, count() AS runs FROM events FINAL "
                       "WHERE event_type = 'run.finished' GROUP BY outcome ORDER BY runs DESC",
    "cost by workflow": "SELECT r.workflow AS workflow, count() AS runs, "
                        "round(sum(f.cost_usd), 4) AS cost_usd, "
                        "round(sum(f.cost_usd) / countIf(f.outcome = 'success'), 4) "
                        "AS cost_per_success_usd "
                        "FROM (SELECT run_id, workflow FROM events FINAL "
                        "WHERE event_type = 'run.started') AS r "
                        "INNER JOIN (SELECT run_id, outcome, "
                        "toFloat64(JSONExtractFloat(body, 'totals', 'cost_usd')) AS cost_usd "
                        "FROM events FINAL WHERE event_type = 'run.finished') AS f "
                        "USING run_id GROUP BY workflow ORDER BY workflow",
    "rejected input": "SELECT reason, count() AS messages FROM rejected_events FINAL "
                      "GROUP BY reason ORDER BY messages DESC",
}
