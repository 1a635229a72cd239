"""``agentledger health`` and ``agentledger retention show``: is the ledger well."""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import out, print_json, table

retention_app = typer.Typer(help="How long each table keeps its rows.", no_args_is_help=True)


def health(
    since: Annotated[str, typer.Option(help="tool health window")] = "1h",
    as_json: JsonFlag = False,
) -> None:
    """Is the ledger healthy: store reachable, data fresh, a stalled sink, a silent or
    lagging stream worker, crash-looping children, the DLQ rate, open breakers, safe modes,
    and tool error rates. Exit 0 ok, 2 degraded, 1 unreachable."""
    from agentledger.api_client import LedgerError
    from agentledger.supervisor import read_status

    try:
        with connect.ledger() as ledger:
            report = ledger.get("/v1/health")
            tools = ledger.get("/v1/tools/health", since=since)["tools"]
    except LedgerError as exc:
        stack = read_status(connect.settings())
        if stack is None:
            raise
        # The stack lives but its store API does not answer: that is degraded, not gone.
        report = {"status": "degraded", "store": f"unreachable: {exc}", "supervisor": stack,
                  "problems": [f"{c['name']}: {c['state']}" for c in stack["children"]
                               if c["state"] != "running"] or [f"store API: {exc}"]}
        if as_json:
            print_json(report)
        else:
            out.print(f"status: [bold]degraded[/]  store unreachable: {exc}", highlight=False)
            for problem in report["problems"]:
                out.print(f"problem: {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    report["tools"] = tools
    if as_json:
        print_json(report)
    else:
        out.print(f"status: [bold]{report['status']}[/]  events {report['events']:,} "
                  f"({report['events_last_hour']:,} in the last hour), last ingest "
                  f"{report['last_ingest'] or 'never'}", highlight=False)
        if "rejected_last_hour" in report:
            out.print(f"rejected in the last hour: {report['rejected_last_hour'] or 'none'}"
                      f" ({report['dlq_per_minute']:g}/min over the last 5 min)",
                      highlight=False)
        for problem in report.get("problems", []):
            out.print(f"problem: {problem}", highlight=False, markup=False)
        if report.get("components"):
            table(report["components"], ["component", "instance", "status", "age_s",
                                          "lag_events"], title="pipeline")
        table(report["open_breakers"] + report["safe_modes"],
               ["kind", "scope", "rule", "state", "since", "reason"],
               title="degraded", empty="nothing")
        table(tools, ["tool", "calls", "errors", "timeouts", "error_rate", "p95_ms"],
               title=f"tools, last {since}", empty="no tool calls")
    if report["status"] != "ok":
        raise typer.Exit(2)


@retention_app.command("show")
def retention_show(as_json: JsonFlag = False) -> None:
    """TTL per table: configured (AGENTLEDGER_*_RETENTION_DAYS) and applied, with sizes.

    A changed setting is applied by the next process that opens the store."""
    with connect.ledger() as ledger:
        tables = ledger.get("/v1/retention")["tables"]
    if as_json:
        print_json(tables)
        return
    table(tables, ["table", "configured_days", "applied_days", "rows", "bytes_on_disk",
                    "ttl"], title="retention")
