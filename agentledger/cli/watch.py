"""``agentledger watch``: the live terminal view of the fleet (Rich Live, every second).

It reads ``GET /v1/watch`` from the running stack (found like every other command: a
running ``agentledger up``, or ``AGENTLEDGER_API_URL``), or from ``--api-url`` with
``--api-key``. ``--once --json`` prints one snapshot for scripts.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"OPEN": "bold red", "HALF_OPEN": "yellow", "CLOSED": "green", "normal": "green",
               "read_only": "bold dark_orange", "halted": "bold red"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.6f}"


def _time(value: Any) -> str:
    try:
        return f"{dt.datetime.fromisoformat(str(value)):%H:%M:%S}"
    except ValueError:
        return str(value)


def _pipeline(snap: dict[str, Any]) -> Table:
    flow = snap["throughput"]
    table = Table(title="pipeline", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("events/s in", f"{flow['in_per_s']:,.2f}")
    table.add_row("events/s landed", f"{flow['landed_per_s']:,.2f}")
    sink, loop = snap.get("sink"), snap.get("control_loop")
    if "sink" in snap:
        table.add_row("sink", "no heartbeat" if not sink else (
            f"{sink['status']}, {sink['lag_events']:,} behind, heartbeat "
            f"{_age(sink['heartbeat_age_s'])} ago"))
        table.add_row("control loop", "no heartbeat" if not loop else (
            f"{loop['status']}, event time {_time(loop['event_time'])}, "
            + (f"{loop['lag_events']:,} behind, " if loop.get("lag_events") is not None else "")
            + f"heartbeat {_age(loop['heartbeat_age_s'])} ago"))
        table.add_row("dead letters/min", f"{snap['dlq_per_minute']:,.2f}")
    per = snap["cost_per_success"]
    table.add_row(f"cost per success ({snap['recent_minutes']}m)", _usd(per["usd_per_success"]))
    return table


def _control(snap: dict[str, Any]) -> Table:
    table = Table(title="breakers and safe modes", title_justify="left")
    for name in ("kind", "scope", "state", "for", "reason"):
        table.add_column(name, justify="right" if name == "for" else "left")
    for row in snap["breakers"] + snap["safe_modes"]:
        table.add_row(row["kind"], row["scope"], Text(row["state"],
                      style=STATE_STYLE.get(row["state"], "")), _age(row["age_s"]),
                      row["reason"])
    return table


def _transitions(snap: dict[str, Any]) -> Table:
    table = Table(title=f"transitions, last {snap['recent_minutes']} min", title_justify="left")
    for name in ("time", "kind", "scope", "change", "reason"):
        table.add_column(name)
    for row in snap["transitions"][:10]:
        table.add_row(_time(row["ts"]), row["kind"], row["scope"],
                      Text(f"{row['previous_state'] or '-'} → {row['state']}",
                           style=STATE_STYLE.get(row["state"], "")), row["reason"])
    return table


def _runs(snap: dict[str, Any]) -> Table:
    table = Table(title=f"most expensive runs, last {snap['recent_minutes']} min",
                  title_justify="left")
    for name in ("finished", "tenant", "workflow", "agent", "outcome", "cost", "run"):
        table.add_column(name, justify="right" if name == "cost" else "left")
    for row in snap["most_expensive_runs"]:
        table.add_row(_time(row["finished_at"]), row["tenant"], row["workflow"], row["agent"],
                      row["outcome"], _usd(row["cost_usd"]), row["run_id"])
    return table


def view(snap: dict[str, Any], source: str) -> Panel:
    """The whole screen for one snapshot."""
    degraded = snap["degraded"]
    status = (Text(f"DEGRADED: {len(degraded)} restricted", style="bold red") if degraded
              else Text("ok", style="bold green"))
    title = Text.assemble("agentledger watch · ", status, f" · {_time(snap['now'])} UTC")
    return Panel(Group(_pipeline(snap), _control(snap), _transitions(snap), _runs(snap)),
                 title=title, subtitle=f"{source} · Ctrl-C to stop", title_align="left")


def watch(
    once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
    = False,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    recent: Annotated[int, typer.Option(min=1, max=1440, help=(
        "minutes that transitions, runs and cost per success look back"))] = 15,
    api_url: Annotated[str | None, typer.Option(help="a ledger API (default: the running "
                                                "stack, or AGENTLEDGER_API_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="its key (default AGENTLEDGER_API_KEY "
                                                "or this machine's operator key)")] = None,
) -> None:
    """Live view of the fleet, refreshed every second: events/s in and landed, sink and
    control-loop lag, dead-letter rate, breakers and safe modes with reasons and ages, the
    most expensive recent runs, cost per successful task. `--once --json` for scripts."""
    from agentledger.api_client import LedgerClient, LedgerError, open_ledger
    from agentledger.core.settings import load_settings

    if api_url:
        ledger = LedgerClient(api_url, api_key, timeout_s=10)
    else:
        overrides = {"api_key": api_key} if api_key else {}
        ledger = open_ledger(load_settings(**overrides))
    with ledger:
        if once:
            snap = ledger.get("/v1/watch", recent_minutes=recent)
            if as_json:
                sys.stdout.write(json.dumps(snap) + "\n")
            else:
                Console().print(view(snap, ledger.url))
            return
        with Live(Text("waiting for the first snapshot…"), auto_refresh=False,
                  screen=False) as live:
            try:
                while True:
                    try:
                        shown: Any = view(ledger.get("/v1/watch", recent_minutes=recent),
                                          ledger.url)
                    except LedgerError as exc:
                        shown = Text(f"{exc} (retrying)", style="red")
                    live.update(shown, refresh=True)
                    time.sleep(interval)
            except KeyboardInterrupt:
                pass
