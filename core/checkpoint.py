"""Signed tree heads ("checkpoints") of the ledger's Merkle logs.

A head says: the log ``log_id`` held ``tree_size`` leaves whose RFC 9162 root was
``root_hash`` at ``issued_at_ms``; the ledger key signed it (ed25519, purpose
:data:`agentledger.core.signing.CHECKPOINT`). The signed bytes are a fixed text, not JSON,
so a verifier in any language rebuilds them without a canonicalizer::

    agentledger.checkpoint.v1\\n{log_id}\\n{tree_size}\\n{root_hex}\\n{issued_at_ms}\\n

The head names its ``key_id`` (:func:`agentledger.core.signing.key_id`), so heads signed
before a key rotation keep verifying against the rotated-out public key a witness keeps.
Signatures and roots travel as lowercase hex.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from agentledger.core import signing
from agentledger.schemas import topics


def log_id(partition: int) -> str:
    """The log of one ``agent.events`` partition."""
    return f"{topics.EVENTS}/{partition}"


def head_message(log: str, tree_size: int, root_hex: str, issued_at_ms: int) -> bytes:
    """The exact bytes a head's signature covers."""
    return (f"{signing.CHECKPOINT}\n{log}\n{int(tree_size)}\n{root_hex}\n"
            f"{int(issued_at_ms)}\n").encode()


@dataclass(frozen=True)
class SignedHead:
    log_id: str
    tree_size: int
    root_hash: str
    issued_at_ms: int
    key_id: str
    signature: str

    def message(self) -> bytes:
        return head_message(self.log_id, self.tree_size, self.root_hash, self.issued_at_ms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedHead:
        """ValueError/KeyError/TypeError on a malformed record."""
        return cls(str(data["log_id"]), int(data["tree_size"]), str(data["root_hash"]),
                   int(data["issued_at_ms"]), str(data["key_id"]), str(data["signature"]))


def sign_head(key: signing.LedgerKey, log: str, tree_size: int, root_hex: str,
              issued_at_ms: int) -> SignedHead:
    """A head signed by ``key`` (~50 µs)."""
    sig = key.private.sign(head_message(log, tree_size, root_hex, issued_at_ms))
    return SignedHead(log, int(tree_size), root_hex, int(issued_at_ms), key.key_id,
                      sig.hex())


def verify_head(head: SignedHead, keyring: signing.Keyring) -> bool:
    """True if a key of ``keyring`` with the head's key id signed exactly this head."""
    public = keyring.keys.get(head.key_id)
    if public is None:
        return False
    try:
        public.verify(bytes.fromhex(head.signature), head.message())
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
