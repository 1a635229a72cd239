"""``agentledger sql`` and ``agentledger summary``: read-only SQL through the ledger API."""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, print_json, show


def _parse_params(params: list[str]) -> dict[str, str]:
    parsed = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"--param takes name=value, got {item!r}")
        parsed[name] = value
    return parsed


def sql(
    query: Annotated[str, typer.Argument(help="one read-only statement (SELECT, WITH, SHOW…)")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="bind name=value for {name:Type} placeholders")] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="refuse results larger than this")]
    = 10_000,
    as_json: JsonFlag = False,
) -> None:
    """Run a read-only SQL query against the ledger store (needs an operator key).

    Works while `agentledger up` owns the embedded store (the query goes to its API).
    Statements that write are refused, by a check here and by ClickHouse's readonly mode.
    """
    with connect.ledger() as ledger:
        result = ledger.query(query, _parse_params(param or []), max_rows=max_rows)
    show(result, as_json)


def summary(as_json: JsonFlag = False) -> None:
    """Ingestion summary: events by type, runs by outcome, cost by workflow, rejects."""
    from agentledger.queries.sql import SUMMARY_QUERIES

    with connect.ledger() as ledger:
        results = {title: ledger.query(q) for title, q in SUMMARY_QUERIES.items()}
    if as_json:
        print_json({title: [dict(zip(r.columns, row, strict=True)) for row in r.rows]
                     for title, r in results.items()})
        return
    for title, result in results.items():
        show(result, False, title=title)
