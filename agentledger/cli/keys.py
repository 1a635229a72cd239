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


@keys_app.command("ledger")
def keys_ledger(
    rotate: Annotated[bool, typer.Option(
        help="make a new signing key; the old public key stays trusted beside it")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The ledger's ed25519 signing key: its id and public key, for agents elsewhere.

    The API signs approval states and the stream workers sign control signals with it;
    agents verify with the public key (AGENTLEDGER_LEDGER_PUBLIC_KEY). Created on first
    use under <data_dir>/keys (AGENTLEDGER_LEDGER_KEY_DIR), private key mode 0600.
    Restart the API and the stream workers after --rotate, and give agents every public
    key listed until the records the old key signed are superseded.
    """
    from agentledger.core import signing

    settings = connect.settings()
    directory = signing.key_dir(settings)
    key = signing.rotate(directory) if rotate else signing.ledger_key(settings)
    trusted = signing.local_keyring(directory)
    setting = "AGENTLEDGER_LEDGER_PUBLIC_KEY=" + ",".join(
        str(p) for p in sorted(directory.glob("*.pub")))
    found = {"key_id": key.key_id, "public_key": key.public_text,
             "public_key_file": str(directory / signing.PUBLIC_FILE),
             "trusted_key_ids": sorted(trusted.keys), "setting": setting}
    if as_json:
        print_json(found)
        return
    err.print(f"ledger key {key.key_id} ({directory}); give agents:", highlight=False)
    sys.stdout.write(setting + "\n")
