"""``agentledger reconcile``: is anything missing from the store?"""

from __future__ import annotations

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, SinceOpt
from agentledger.cli.render import out, print_json, table


def reconcile(since: SinceOpt = None, as_json: JsonFlag = False) -> None:
    """Every offset of agent.events between the oldest Kafka retains (or --since) and the
    sink's committed end either landed in events or is in rejected_events; each gap is
    named by partition and offsets. Exit 0 when nothing is missing, 1 when something is.
    Needs an operator key."""
    with connect.ledger() as ledger:
        report = ledger.post("/v1/reconcile", {"since": since})
    if as_json:
        print_json(report)
    else:
        verdict = "[bold]ok[/]" if report["ok"] else "[bold red]MISSING[/]"
        out.print(f"{report['topic']}: {verdict}  {report['accounted']:,} of "
                  f"{report['expected']:,} offsets accounted for, {report['missing']:,} "
                  "missing", highlight=False)
        table(report["partitions"], ["partition", "start", "end", "expected", "accounted",
                                     "missing"], title="partitions")
        for line in report["problems"]:
            out.print(f"gap: {line}", highlight=False, markup=False)
    if not report["ok"]:
        raise typer.Exit(1)
