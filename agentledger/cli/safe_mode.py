"""``agentledger safe-mode set|clear``: manual overrides of an agent's mode, through the
ledger API's ``POST /v1/control/overrides`` (an operator key: AGENTLEDGER_API_KEY, or this
machine's). The API records the key's name as who made it and signs the override with the
ledger's key; the CLI no longer produces to Kafka itself."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.render import UserError, out, print_json

safe_mode_app = typer.Typer(help="Manual safe-mode overrides for an agent (tenant/agent).",
                            no_args_is_help=True)


def _publish_override(scope: str, state: str, reason: str) -> dict[str, Any]:
    """Ask the API for the override; its answer names the key that made it."""
    parts = scope.split("/")
    if len(parts) != 2 or not all(parts) or "*" in scope:
        raise UserError(f"scope must be TENANT/AGENT, got {scope!r}")
    if not reason.strip():
        raise UserError("--reason is required: say why, it is kept in the ledger")
    with connect.ledger() as client:
        done = client.post("/v1/control/overrides", {
            "tenant": parts[0], "agent": parts[1], "state": state, "reason": reason})
    return {"key": done["key"], "state": done["state"], "version": done["version"],
            "reason": done["reason"], "by": done["by"]}


@safe_mode_app.command("set")
def safe_mode_set(
    scope: Annotated[str, typer.Argument(help="TENANT/AGENT")],
    reason: Annotated[str, typer.Option(help="why (recorded with the signal)")],
    mode: Annotated[str, typer.Option(help="read_only, halted, or normal (pin normal)")]
    = "read_only",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Force an agent into a mode until `safe-mode clear`, whatever the rules decide."""
    if mode not in ("read_only", "halted", "normal"):
        raise UserError(f"--mode must be read_only, halted or normal, got {mode!r}")
    done = _publish_override(scope, mode, reason)
    if as_json:
        print_json(done)
    else:
        out.print(f"override {scope}: {mode} (version {done['version']})", highlight=False)


@safe_mode_app.command("clear")
def safe_mode_clear(
    scope: Annotated[str, typer.Argument(help="TENANT/AGENT")],
    reason: Annotated[str, typer.Option(help="why (recorded with the signal)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove a manual override; the policy's automatic safe mode applies again."""
    done = _publish_override(scope, "clear", reason)
    if as_json:
        print_json(done)
    else:
        out.print(f"override {scope}: cleared (version {done['version']})", highlight=False)
