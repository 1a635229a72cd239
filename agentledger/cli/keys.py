"""``agentledger keys``: API keys, who may read which tenants."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, err, print_json, table

keys_app = typer.Typer(help="API keys: who may read which tenants.", no_args_is_help=True)

_LIFETIME = re.compile(r"^(\d{1,5})\s*(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def expiry(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``90d``, ``12h``, ``2w`` from now, or an ISO date/datetime (UTC): when a key dies.
    A key that expires in the past is refused here, not silently created dead."""
    now = now or dt.datetime.now(dt.UTC)
    match = _LIFETIME.match(text.strip().lower())
    if match:
        when = now + dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--expires {text!r}: use 90d, 12h, 30m, 2w or an ISO "
                            "date/datetime (UTC)") from None
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if when <= now:
        raise UserError(f"--expires {text!r} is not in the future")
    return when.replace(microsecond=0)


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
    expires: Annotated[str | None, typer.Option(
        help="the key dies then: 90d, 12h, 2w from now, or an ISO date/datetime (UTC)")]
    = None,
) -> None:
    """Create an API key, print it once, and store only its hash in the keys file
    (AGENTLEDGER_API_KEYS_FILE). Running APIs and intakes accept it within a second."""
    from agentledger.auth import ALL_TENANTS, append_entry, entry_for, new_key

    if not tenant and not all_tenants:
        raise UserError("name the tenants this key may read (--tenant), or --all-tenants")
    dies = expiry(expires) if expires is not None else None
    key = new_key()
    path = append_entry(connect.settings(), entry_for(name, key, [ALL_TENANTS] if all_tenants
                                               else tenant or [], roles=role or (),
                                               agents=agent or (), expires=dies))
    until = f", valid until {dies.isoformat()}" if dies else ""
    err.print(f"key {name!r} added to {path}{until}; it is shown only now:",
              highlight=False)
    sys.stdout.write(key + "\n")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """The configured keys: names, tenants, expiry, state (active, expired, revoked) and
    hash prefixes (never the keys)."""
    from agentledger.auth import load_entries

    entries = [{"name": e.name, "tenants": e.tenants, "sha256": e.sha256[:12] + "…",
                "expires": e.expires.isoformat() if e.expires else None,
                "state": e.state()}
               for e in load_entries(connect.settings())]
    if as_json:
        print_json(entries)
        return
    table(entries, ["name", "tenants", "expires", "state", "sha256"], title="API keys",
          empty="none configured")


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="the key's name, as `keys list` shows it")],
) -> None:
    """Revoke a key: it stays listed as revoked, and the API and the OTLP intake refuse it
    (401) within a second, without a restart."""
    from agentledger.auth import KeyConfigError, revoke_entry

    try:
        path = revoke_entry(connect.settings(), name)
    except KeyConfigError as exc:
        raise UserError(str(exc)) from None
    err.print(f"key {name!r} revoked in {path}", highlight=False)


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


@keys_app.command("ledger-public")
def keys_ledger_public(
    out: Annotated[Path | None, typer.Option(
        "--out", help="write the file here (a witness's keys.json) instead of stdout")] = None,
) -> None:
    """Publish the ledger's public keys: the current one and every rotated-out one.

    The JSON is the witness's keys.json (`agentledger checkpoints export` merges it into
    DIR/keys.json by itself): a signed checkpoint names its key id, so heads signed before
    a rotation keep verifying as long as the witness keeps the old public key. Restart the
    sink after `keys ledger --rotate`: it signs with the key it loaded at start.
    """
    from agentledger.core import signing

    settings = connect.settings()
    directory = signing.key_dir(settings)
    current = signing.load_key(directory)
    if current is None:  # publishing must not mint a key nobody signs with yet
        raise UserError(f"no ledger key in {directory}: the sink (or `agentledger keys "
                        "ledger`) makes one")
    trusted = signing.local_keyring(directory)
    trusted.add(current.public)
    body = {"keys": [{"key_id": kid, "alg": signing.ALG,
                      "public_key": signing.public_text(public),
                      "current": kid == current.key_id}
                     for kid, public in sorted(trusted.keys.items())]}
    text = json.dumps(body, indent=1) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        err.print(f"{len(body['keys'])} ledger public keys written to {out}", highlight=False)
