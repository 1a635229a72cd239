"""``agentledger keys``: API keys, who may read which tenants."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, err, print_json, table

keys_app = typer.Typer(help="API keys: who may read which tenants.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    tenant: Annotated[list[str] | None, typer.Option(
        "--tenant", "-t", help="a tenant this key may read (repeat for more)")] = None,
    all_tenants: Annotated[bool, typer.Option(
        help="an operator key: every tenant, SQL, revenue, store metadata")] = False,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="an approval queue this key may decide (repeat for more)")] = None,
    agent: Annotated[list[str] | None, typer.Option(
        "--agent", help="TENANT/AGENT this key acts for: it cannot approve its requests")]
    = None,
) -> None:
    """Create an API key, print it once, and store only its hash in the keys file
    (AGENTLEDGER_API_KEYS_FILE). Running APIs pick it up when restarted."""
    from agentledger.auth import ALL_TENANTS, append_entry, entry_for, new_key

    if not tenant and not all_tenants:
        raise UserError("name the tenants this key may read (--tenant), or --all-tenants")
    key = new_key()
    path = append_entry(connect.settings(), entry_for(name, key, [ALL_TENANTS] if all_tenants
                                               else tenant or [], roles=role or (),
                                               agents=agent or ()))
    err.print(f"key {name!r} added to {path}; it is shown only now:", highlight=False)
    sys.stdout.write(key + "\n")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """The configured keys: names, tenants and hash prefixes (never the keys)."""
    from agentledger.auth import load_entries

    entries = [{"name": e.name, "tenants": e.tenants, "sha256": e.sha256[:12] + "…"}
               for e in load_entries(connect.settings())]
    if as_json:
        print_json(entries)
        return
    table(entries, ["name", "tenants", "sha256"], title="API keys", empty="none configured")
