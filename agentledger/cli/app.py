"""The ``agentledger`` command: every command group registered on one Typer app, and the
entry point that turns known errors into one line (:mod:`agentledger.cli.render`).

Each group lives in its own module; commands register here, in the order ``--help`` lists
them.
"""

from __future__ import annotations

import sys

import typer

from agentledger.cli import (
    approvals,
    audit_export,
    checkpoints,
    control,
    dashboards,
    gate,
    health,
    intake,
    keys,
    margins,
    notify,
    reconcile,
    regression,
    runs,
    safe_mode,
    simulate,
    sql,
    stack,
    tool_policy,
)
from agentledger.cli.connect import debug_requested
from agentledger.cli.render import known_errors, print_error
from agentledger.cli.watch import watch

app = typer.Typer(
    name="agentledger",
    help="An accountable execution ledger and control loop for production AI agents.\n\n"
    "Agents emit events to Kafka; a sink lands them in ClickHouse, where you query them. "
    "Configuration comes from AGENTLEDGER_* environment variables; the defaults run an "
    "embedded broker (Tansu) and an embedded ClickHouse engine (chdb) under ./.agentledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (stack.up, stack.broker, stack.sink, simulate.simulate, stack.streams,
                intake.intake, sql.sql, sql.summary, runs.search, runs.trace, runs.replay,
                runs.verify, margins.margins, gate.gate, audit_export.export, health.health,
                stack.api, dashboards.report,
                watch):  # watch: agentledger/cli/watch.py, the live view
    app.command()(command)

app.command()(reconcile.reconcile)  # agentledger/cli/reconcile.py
app.command("verify-bundle")(runs.verify_bundle)  # offline: a bundle and a public key
app.add_typer(control.control_app, name="control")
app.add_typer(checkpoints.checkpoints_app, name="checkpoints")  # the witness
app.add_typer(safe_mode.safe_mode_app, name="safe-mode")
app.add_typer(margins.revenue_app, name="revenue")
app.add_typer(health.retention_app, name="retention")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(approvals.approvals_app, name="approvals")
app.add_typer(tool_policy.tool_policy_app, name="tool-policy")
# The old name, kept working: `policy check|test|diff` (the tool policy) and `policy
# backtest` (which always meant the control policy's `control backtest`).
app.add_typer(tool_policy.legacy_policy_app(control.backtest), name="policy", hidden=True)
app.add_typer(dashboards.dashboards_app, name="dashboards")
app.add_typer(regression.regression_app, name="regression")  # agentledger/cli/regression.py
app.command()(notify.notify)  # agentledger/cli/notify.py: the webhook sender
app.add_typer(notify.webhooks_app, name="webhooks")


def main() -> None:
    """Entry point: known errors become one readable line and a non-zero exit."""
    known = known_errors()
    try:
        app()
    except known as exc:
        print_error(exc)
        if debug_requested():
            raise
        sys.exit(1)
