"""Runs and events: ``search``, ``trace`` (a run's timeline), ``replay`` (its bundle) and
``verify`` (its hash chain)."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, SinceOpt, TenantOpt, UntilOpt
from agentledger.cli.render import UserError, err, out, print_json, table


def search(
    tenant: TenantOpt = None,
    agent: Annotated[str | None, typer.Option(help="agent name")] = None,
    tool: Annotated[str | None, typer.Option(help="tool name")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="e.g. tool.result")] = None,
    status: Annotated[str | None, typer.Option(help="ok, error, timeout, rejected")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="success, failure, aborted, rolled_back")] = None,
    trace: Annotated[str | None, typer.Option(help="trace id (32 hex)")] = None,
    run: Annotated[str | None, typer.Option(help="run id")] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow name")] = None,
    text: Annotated[str | None, typer.Option(help="text in errors (case-insensitive)")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="events per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
    oldest_first: Annotated[bool, typer.Option(help="sort oldest first")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search events by tenant, agent, tool, type, status, outcome, ids, error text, time.

    Newest first; prints a cursor for the next page.
    """
    with connect.ledger() as ledger:
        page = ledger.get("/v1/events", tenant=tenant, agent=agent, tool=tool,
                          event_type=event_type, status=status, outcome=outcome,
                          trace_id=trace, run_id=run, workflow=workflow, q=text, since=since,
                          until=until, limit=limit, cursor=cursor,
                          order="asc" if oldest_first else "desc")
    if as_json:
        print_json(page)
        return
    table(page["events"], ["ts", "tenant", "agent", "event_type", "tool", "status",
                            "outcome", "error_type", "cost_usd", "latency_ms", "run_id"],
           title="events", empty="no events match")
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def trace(
    ref: Annotated[str, typer.Argument(help="a trace id or a run id")],
    as_json: JsonFlag = False,
) -> None:
    """The timeline of a run (or every run of a trace): inputs, retrieval, model calls,
    tool calls, policy decisions and approvals, outcome — with latencies and costs."""
    with connect.ledger() as ledger:
        found = ledger.get(f"/v1/timeline/{_ref(ref)}")
    if as_json:
        print_json(found)
        return
    for run in found["runs"]:
        out.print(f"[bold]run {run['run_id']}[/] {run['tenant']}/{run['agent']} "
                  f"{run['workflow'] or '?'} → {run['outcome'] or 'unfinished'}  "
                  f"trace {run['trace_id']}  cost ${run['cost_usd']:.6f}  "
                  f"{run['duration_ms']:.0f} ms", highlight=False)
        table(run["steps"], ["seq", "offset_ms", "phase", "what", "latency_ms", "cost_usd"])


def _ref(ref: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}", ref):
        raise UserError(f"not a run or trace id: {ref!r}")
    return ref


def replay(
    ref: Annotated[str, typer.Argument(help="a run id or a trace id")],
    output: Annotated[str, typer.Option("--output", "-o", help="file to write ('-' = stdout)")],
) -> None:
    """Write the replay bundle of a run (or of every run of a trace) as one JSON document:
    ordered events, input hash and reference, retrieved document hashes and index version,
    tool schema hashes and versions, models, prompt and policy versions, verification.

    Exits 1 when the stored chain does not verify (the bundle is written anyway).
    """
    with connect.ledger() as ledger:
        bundle = ledger.get(f"/v1/replay/{_ref(ref)}")
    text = json.dumps(bundle, indent=2, default=str) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w") as handle:
            handle.write(text)
        runs = bundle["runs"]
        err.print(f"wrote {output}: {len(runs)} run(s), "
                  f"{sum(len(r['events']) for r in runs)} events, chain "
                  f"{'verified' if bundle['verified'] else 'BROKEN'}", highlight=False)
    if not bundle["verified"]:
        raise typer.Exit(1)


def verify(
    ref: Annotated[str, typer.Argument(help="a run id or a trace id")],
    as_json: JsonFlag = False,
) -> None:
    """Verify the stored hash chain of a run (or every run of a trace).

    Detects modified, deleted, inserted and reordered events and columns edited in place;
    exits 1 and names the first broken link.
    """
    with connect.ledger() as ledger:
        result = ledger.get(f"/v1/verify/{_ref(ref)}")
    if as_json:
        print_json(result)
    else:
        for run in result["runs"]:
            if run["ok"]:
                out.print(f"run {run['run_id']}: ok, {run['events']} events chained"
                          f"{'' if run.get('complete') else ' (run not finished)'}",
                          highlight=False)
                if run.get("custody"):
                    out.print(f"  custody from {run['custody']}", highlight=False)
            else:
                out.print(f"run {run['run_id']}: BROKEN at seq {run['broken_seq']} "
                          f"(event {run['broken_event_id']}): {run['problem']}",
                          highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)
