"""Dashboards: ``agentledger dashboards build`` (Grafana as code) and ``agentledger
report`` (the same panels as one static page)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.render import UserError, err

dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)


@dashboards_app.command("build")
def dashboards_build(
    out: Annotated[str, typer.Option(help="directory for json/ and provisioning/")]
    = "dashboards",
) -> None:
    """Write the four dashboards (operations, tool reliability, unit economics, incident
    search) as Grafana JSON, with the ClickHouse datasource and dashboard provisioning and
    the alert rules (dashboards/alerts.py)."""
    from pathlib import Path

    from agentledger.dashboards.build import build

    for path in build(Path(out)):
        out_path = str(path)
        sys.stdout.write(out_path + "\n")


def report(
    output: Annotated[str, typer.Option("--output", "-o", help="HTML file to write")]
    = "report.html",
    since: Annotated[str, typer.Option(help="from: 24h, 7d, or an ISO datetime")] = "24h",
    until: Annotated[str, typer.Option(help="to: now, or an ISO datetime")] = "now",
) -> None:
    """The dashboards' panels as one static HTML page of charts, for when no Grafana runs.

    Runs every panel's SQL (macros expanded as Grafana does) through the ledger API; the
    incident section shows the latest run that did not succeed."""
    import datetime as dt

    from agentledger.dashboards.check import run_panels
    from agentledger.dashboards.report import render
    from agentledger.queries.common import QueryError, parse_time

    try:
        time_from, time_to = parse_time(since), parse_time(until)
    except QueryError as exc:
        raise UserError(str(exc)) from None
    assert time_from is not None and time_to is not None
    with connect.ledger() as ledger:
        tenants = [r[0] for r in ledger.query("SELECT DISTINCT tenant FROM events").rows]
        latest = ledger.query(
            "SELECT run_id FROM daily_economics WHERE outcome != 'success' "
            "ORDER BY finished_at DESC LIMIT 1").rows
        run_id = latest[0][0] if latest else ""

        def query(sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
            result = ledger.query(sql, max_rows=10_000)
            return result.columns, result.types, result.rows

        variables = {"tenant": tenants or [""], "agent": "", "tool": "", "trace_id": "",
                     "run_id": run_id, "api_url": ledger.url}
        results = run_panels(query, variables=variables, time_from=time_from,
                             time_to=time_to)
        page = render(results, generated_at=dt.datetime.now(dt.UTC), time_from=time_from,
                      time_to=time_to, source=f"ledger API {ledger.url}")
    with open(output, "w") as handle:
        handle.write(page)
    panels = [r for _, rs in results for r in rs]
    drawn = sum(1 for r in panels if r.rows and not r.error)
    failed = [r.panel.title for r in panels if r.error]
    err.print(f"wrote {output}: {drawn} of {len(panels)} panels have data"
              f"{'; failed: ' + ', '.join(failed) if failed else ''}", highlight=False)
    if failed:
        raise typer.Exit(1)
