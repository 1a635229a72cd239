"""Ledger integrity (README, "The SDK"): canonical JSON, the per-run hash chain, optional HMAC.

``hash = sha256(canonical_json(event without hash/sig) + prev_hash)``, chained per run
by ``seq``; the first event's ``prev_hash`` is :data:`GENESIS`. The chain is computed on
the event's JSON form (what crosses Kafka and is stored verbatim in ClickHouse), so a
verifier needs only the stored JSON, never the SDK's objects.

Canonical forms are versioned by the event's own ``canon`` field, which is inside the
hashed bytes (so it cannot be swapped without breaking the hash):

- absent (legacy, every ledger written before ``canon`` existed): orjson with sorted keys;
- ``"jcs"``: RFC 8785 (:mod:`agentledger.schemas.canonical`), reproducible in any language; test
  vectors in ``schemas/test_vectors/canonical.json``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agentledger.schemas.canonical import canonicalize

GENESIS: Final = "0" * 64
_UNHASHED: Final = frozenset({"hash", "sig"})
CANON_JCS: Final = "jcs"
CANON_FORMS: Final = (None, CANON_JCS)
"""Every canonical form a verifier accepts: None is the legacy form."""


class UnknownCanon(ValueError):
    """An event names a canonical form this verifier does not know."""


def canonical_json(event: Mapping[str, Any]) -> bytes:
    """The hashed bytes of ``event`` (``hash`` and ``sig`` left out), in its ``canon`` form.

    Legacy (no ``canon``): sorted keys, no whitespace, UTF-8, orjson's number forms.
    ``canon: "jcs"``: RFC 8785.
    """
    if not _UNHASHED.isdisjoint(event):
        event = {k: v for k, v in event.items() if k not in _UNHASHED}
    canon = event.get("canon")
    if canon is None:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    if canon == CANON_JCS:
        return canonicalize(event)
    raise UnknownCanon(f"unknown canonical form {canon!r} (known: jcs, or none for legacy)")


def event_hash(event: Mapping[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_json(event) + prev_hash.encode("ascii")).hexdigest()


def sign(event_hash_hex: str, key: bytes | Ed25519PrivateKey) -> str:
    """The ``sig`` of an event: HMAC-SHA256 of the event hash with the principal's secret
    key (64 hex), or, with an ed25519 private key, its signature of
    :func:`signed_bytes` (128 hex), which anyone holding the public key can check."""
    if isinstance(key, Ed25519PrivateKey):
        return key.sign(signed_bytes(event_hash_hex)).hex()
    return hmac.new(key, event_hash_hex.encode("ascii"), hashlib.sha256).hexdigest()


EVENT_SIG_PURPOSE: Final = "agentledger.event.v1"
"""What an agent's ed25519 ``sig`` signs: this purpose, a newline, the event's hash (hex),
so an agent's key can never sign a checkpoint or a control record by mistake."""


def signed_bytes(event_hash_hex: str) -> bytes:
    return f"{EVENT_SIG_PURPOSE}\n{event_hash_hex}".encode("ascii")


def check_sig(event: Mapping[str, Any], public: Ed25519PublicKey) -> str | None:
    """Why ``event``'s ``sig`` is not its agent's ed25519 signature of its hash, or None
    when it is. (The hash itself is checked by :func:`verify_chain`.)"""
    sig = event.get("sig")
    if not sig:
        return "unsigned"
    try:
        public.verify(bytes.fromhex(str(sig)), signed_bytes(str(event.get("hash"))))
    except (InvalidSignature, ValueError):
        return "wrongly signed" if len(str(sig)) == 128 else \
            "signed with an HMAC key, not the agent's registered ed25519 key"
    return None


@dataclass(frozen=True, slots=True)
class ChainResult:
    ok: bool
    events: int
    broken_seq: int | None = None
    broken_event_id: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "broken_seq": self.broken_seq,
            "broken_event_id": self.broken_event_id,
            "problem": self.problem,
        }


def verify_chain(
    events: Iterable[Mapping[str, Any]], keys: Mapping[str, bytes] | None = None
) -> ChainResult:
    """Check one run's events, given in the order they are stored (by ``seq``).

    Detects a modified event (its hash no longer matches), a deleted or inserted event
    (``seq`` gap or ``prev_hash`` not the previous hash) and reordering; names the first
    broken link.
    """
    prev = GENESIS
    count = 0
    for expected_seq, ev in enumerate(events):
        count += 1
        eid = str(ev.get("event_id"))
        seq = ev.get("seq")
        if seq != expected_seq:
            return ChainResult(False, count, seq, eid, f"expected seq {expected_seq}, found {seq}")
        if ev.get("prev_hash") != prev:
            return ChainResult(False, count, seq, eid, "prev_hash does not match previous event")
        try:
            recomputed = event_hash(ev, prev)
        except ValueError as exc:  # an unknown canon, or a value JCS cannot represent
            return ChainResult(False, count, seq, eid, f"cannot canonicalize: {exc}")
        if ev.get("hash") != recomputed:
            return ChainResult(False, count, seq, eid, "hash does not match event content")
        if keys and ev.get("sig") is not None:
            key = keys.get(str(ev.get("principal")))
            if key is not None and not hmac.compare_digest(sign(recomputed, key), ev["sig"]):
                return ChainResult(False, count, seq, eid, "signature does not match")
        prev = recomputed
    return ChainResult(True, count)
