"""``agentledger notify`` (the webhook sender, a service ``up`` runs) and ``agentledger
webhooks check|deliveries``: outgoing webhooks, docs/notifications.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag, TenantOpt
from agentledger.cli.render import UserError, out, print_json, table

webhooks_app = typer.Typer(help="Outgoing webhooks (approvals, SLAs, breakers, safe mode): "
                                "check the config, list deliveries.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="webhooks YAML (default AGENTLEDGER_WEBHOOKS_FILE or "
                     "<data_dir>/webhooks.yaml)")]


def notify(config: ConfigOpt = None) -> None:
    """Run the webhook sender until SIGTERM: follows agent.events, agent.approvals and
    agent.control and posts signed webhooks (Slack-compatible or generic JSON) on new
    approval requests, SLA warnings and breaches, breakers opening and safe mode;
    every attempt is recorded on agent.webhooks. `agentledger up` runs it."""
    import threading

    from agentledger.notify.worker import Notifier
    from agentledger.services import stop_on_signals

    settings = connect.settings()
    stop = threading.Event()
    with Notifier(settings, connect.bootstrap(settings), config_path=config) as notifier, \
            stop_on_signals(stop.set):
        out.print(f"notify: {len(notifier.config.webhooks)} webhooks from "
                  f"{notifier.config_path}", highlight=False)
        stop.wait()


@webhooks_app.command("check")
def check(config: ConfigOpt = None, as_json: JsonFlag = False) -> None:
    """Validate the webhooks file; exits 1 with file and field on a mistake."""
    from agentledger.notify import config as cfg

    path = config or cfg.webhooks_file(connect.settings())
    try:
        loaded = cfg.load(path)
        for hook in loaded.webhooks:
            hook.signing_secret()
    except cfg.ConfigError as exc:
        raise UserError(str(exc)) from None
    shown = [h.public() for h in loaded.webhooks]
    if as_json:
        print_json({"file": str(path), "webhooks": shown})
        return
    table([{**h, "tenants": ",".join(h["tenants"]), "queues": ",".join(h["queues"]) or "all",
            "events": ",".join(h["events"])} for h in shown],
          ["name", "format", "target", "tenants", "queues", "events"],
          title=f"webhooks in {path}", empty="no webhooks configured")


@webhooks_app.command("deliveries")
def deliveries(tenant: TenantOpt = None, webhook: Annotated[str | None, typer.Option(
        help="only this webhook")] = None, as_json: JsonFlag = False) -> None:
    """Recent deliveries with every attempt (from GET /v1/webhooks)."""
    with connect.ledger() as ledger:
        found: dict[str, Any] = ledger.get("/v1/webhooks", tenant=tenant, webhook=webhook)
    if as_json:
        print_json(found)
        return
    rows = [{"created": d["created_at"], "webhook": d["webhook"], "kind": d["kind"],
             "tenant": d["tenant"], "status": d["status"],
             "attempts": " ".join(str(a["status_code"] or "err") for a in d["attempts"])}
            for d in found["deliveries"]]
    table(rows, ["created", "webhook", "kind", "tenant", "status", "attempts"],
          title="webhook deliveries", empty="no deliveries")
