"""Unit economics: ``agentledger margins`` and the revenue rates behind them."""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, SinceOpt, TenantOpt, UntilOpt
from agentledger.cli.render import out, print_json, table

revenue_app = typer.Typer(help="Revenue per successful task, the other half of margins.",
                          no_args_is_help=True)


def margins(
    by: Annotated[str, typer.Option(help="workflow, tenant, agent, model or day")] = "workflow",
    since: SinceOpt = "30d",
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    workflow: Annotated[str | None, typer.Option(help="only this workflow")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cost per successful task, success rate and gross margin (revenue per successful
    task from `agentledger revenue`, minus cost), grouped as asked."""
    with connect.ledger() as ledger:
        found = ledger.get("/v1/margins", by=by, since=since, until=until, tenant=tenant,
                           workflow=workflow)
    if as_json:
        print_json(found)
        return
    def money(v: float | None, places: int = 2) -> str:
        return "" if v is None else f"{v:,.{places}f}"

    shown = [{
        by: g["key"], "runs": g["runs"], "ok": g["successes"],
        "ok %": "" if g["success_rate"] is None else f"{g['success_rate']:.1%}",
        "cost $": money(g["cost_usd"]), "$ per ok": money(g["cost_per_success_usd"], 4),
        "revenue $": money(g["revenue_usd"]), "margin $": money(g["gross_margin_usd"]),
        "margin %": "" if g["gross_margin_pct"] is None else f"{g['gross_margin_pct']:.1f}%",
    } for g in [*found["groups"], found["total"]]]
    table(shown, list(shown[0]), title=f"margins by {by}, USD")


@revenue_app.command("set")
def revenue_set(
    tenant: Annotated[str, typer.Argument(help="tenant")],
    workflow: Annotated[str, typer.Argument(help="workflow")],
    usd: Annotated[float, typer.Argument(min=0, help="revenue per successful task, USD")],
    valid_from: Annotated[str, typer.Option("--from", help="ISO date the rate starts")]
    = "2000-01-01",
    note: Annotated[str, typer.Option(help="why, e.g. the contract")] = "",
) -> None:
    """Set what one successful task of WORKFLOW earns for TENANT from a date on."""
    with connect.ledger() as ledger:
        ledger.post("/v1/revenue", {"tenant": tenant, "workflow": workflow,
                                    "revenue_per_success_usd": usd, "valid_from": valid_from,
                                    "note": note})
    out.print(f"revenue {tenant}/{workflow}: ${usd} per successful task from {valid_from}",
              highlight=False)


@revenue_app.command("show")
def revenue_show(as_json: JsonFlag = False) -> None:
    """Every revenue rate, per tenant, workflow and start date."""
    with connect.ledger() as ledger:
        rates = ledger.get("/v1/revenue")["rates"]
    if as_json:
        print_json(rates)
        return
    table(rates, ["tenant", "workflow", "valid_from", "revenue_per_success_usd", "note"],
           title="revenue", empty="no rates: set one with `agentledger revenue set`")
