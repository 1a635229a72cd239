"""``agentledger reconcile``: is anything missing from the store?"""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, SinceOpt
from agentledger.cli.render import out, print_json, table


def reconcile(since: SinceOpt = None, as_json: JsonFlag = False,
              otlp_topic: Annotated[str, typer.Option(
                  help="the topic the Kafka intake reads")] = "otlp_spans",
              otlp_group: Annotated[str, typer.Option(
                  help="the Kafka intake's consumer group")] = "agentledger-intake") -> None:
    """Every offset of agent.events between the oldest Kafka retains (or --since) and the
    sink's committed end either landed in events or is in rejected_events; every offset of
    otlp_spans up to the Kafka intake's committed end was dead-lettered or its traces are
    runs (or refused spans) in the store. Each gap is named by topic, partition and
    offsets. Exit 0 when nothing is missing, 1 when something is. Needs an operator key."""
    with connect.ledger() as ledger:
        report = ledger.post("/v1/reconcile", {"since": since, "otlp_topic": otlp_topic,
                                               "otlp_group": otlp_group})
    if as_json:
        print_json(report)
    else:
        for found in report["topics"]:
            if found.get("absent"):
                out.print(f"{found['topic']}: no such topic (no Kafka intake here)",
                          highlight=False, markup=False)
                continue
            verdict = "[bold]ok[/]" if found["ok"] else "[bold red]MISSING[/]"
            out.print(f"{found['topic']}: {verdict}  {found['accounted']:,} of "
                      f"{found['expected']:,} offsets accounted for, {found['missing']:,} "
                      "missing", highlight=False)
            table(found["partitions"], ["partition", "start", "end", "expected",
                                        "accounted", "missing"],
                  title=f"{found['topic']} partitions")
        for line in report["problems"]:
            out.print(f"gap: {line}", highlight=False, markup=False)
    if not report["ok"]:
        raise typer.Exit(1)
