"""``agentledger health`` and ``agentledger retention show``: is the ledger well."""

from __future__ import annotations

from typing import Annotated, Any

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
    tool error rates, and (operator keys) whether every offset of agent.events the sink
    committed in the last day landed or was rejected. Exit 0 ok, 2 degraded, 1
    unreachable."""
    from agentledger.api_client import LedgerError
    from agentledger.supervisor import read_status

    try:
        with connect.ledger() as ledger:
            report = ledger.get("/v1/health")
            tools = ledger.get("/v1/tools/health", since=since)["tools"]
            reconciled = _reconcile(ledger)
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
    report["reconcile"] = reconciled
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
        if report["reconcile"] is not None:
            out.print(_reconcile_line(report["reconcile"]), highlight=False, markup=False)
        if report.get("components"):
            table(report["components"], ["component", "instance", "status", "age_s",
                                          "lag_events"], title="pipeline")
        table(report["open_breakers"] + report["safe_modes"],
               ["kind", "scope", "rule", "state", "since", "reason"],
               title="degraded", empty="nothing")
        table(tools, ["tool", "calls", "errors", "timeouts", "error_rate", "p95_ms",
                      "verified_rate"],
               title=f"tools, last {since}", empty="no tool calls")
    if report["status"] != "ok" or (report["reconcile"] or {}).get("missing"):
        raise typer.Exit(2)


RECONCILE_SINCE = "24h"
"""How far back ``health`` reconciles (``agentledger reconcile`` checks all Kafka keeps)."""


def _reconcile(ledger: Any) -> dict[str, Any] | None:
    """``POST /v1/reconcile`` over the last day, for an operator key; None when this key
    may not (403) or Kafka is not reachable: health still answers."""
    from agentledger.api_client import LedgerError

    try:
        found: dict[str, Any] = ledger.post("/v1/reconcile", {"since": RECONCILE_SINCE})
    except LedgerError:
        return None
    return {k: found[k] for k in ("ok", "expected", "accounted", "missing", "problems")}


def _reconcile_line(found: dict[str, Any]) -> str:
    head = (f"reconcile (last {RECONCILE_SINCE}): {found['accounted']:,} of "
            f"{found['expected']:,} committed offsets of agent.events and otlp_spans "
            "landed or rejected")
    if found["ok"]:
        return head
    return "\n".join([f"{head}; {found['missing']:,} MISSING (agentledger reconcile)",
                      *(f"problem: {line}" for line in found["problems"])])


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
