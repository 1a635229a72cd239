"""Agents that sign (issue 23, item 5): an ed25519 key in the SDK gives a 128-hex ``sig``
over the event hash; the catalog registers the public part, and a malformed one is
refused at load with its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter, ValidationError

from agentledger.core import signing
from agentledger.producers.tool_policy_files import PolicyError, load_catalog
from agentledger.schemas.events import Signature
from agentledger.schemas.integrity import check_sig, event_hash, sign

CATALOG = """policy_id: p
version: "1"
agents:
  signing-bot:
    tenants: [acme]
    roles: [support]
    public_key: {key}
tools: {{}}
queues: {{}}
"""


def test_the_catalog_registers_an_agents_public_key(tmp_path: Path) -> None:
    key = signing.LedgerKey.generate()
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.format(key=key.public_text))
    assert load_catalog(path).agent_keys == {"signing-bot": key.public_text}
    path.write_text(CATALOG.format(key="not-a-key"))
    with pytest.raises(PolicyError, match="public_key must be an ed25519 public key"):
        load_catalog(path)


def test_an_ed25519_sig_is_checked_and_fits_the_schema() -> None:
    private, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    event = {"event_id": "e", "body": {}, "canon": "jcs"}
    event["hash"] = event_hash(event, "0" * 64)
    event["sig"] = sign(event["hash"], private)
    assert len(event["sig"]) == 128
    assert check_sig(event, private.public_key()) is None
    assert check_sig(event, other.public_key()) == "wrongly signed"
    assert check_sig({**event, "sig": None}, private.public_key()) == "unsigned"
    hmac_signed = {**event, "sig": sign(event["hash"], b"secret")}
    assert "HMAC" in (check_sig(hmac_signed, private.public_key()) or "")
    wire = TypeAdapter(Signature)
    assert wire.validate_python(event["sig"]) == event["sig"]
    assert wire.validate_python(hmac_signed["sig"]) == hmac_signed["sig"]
    with pytest.raises(ValidationError):
        wire.validate_python("ab" * 48)
