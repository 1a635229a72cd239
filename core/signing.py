"""The ledger's signing key (ed25519): who may say what agents must obey.

Agents obey two compacted topics they cannot check by themselves: ``agent.control``
(breakers, safe mode, budgets, manual overrides) and ``agent.approvals`` (decided approval
requests). Anyone who can produce to those topics could otherwise open a breaker forever,
lift safe mode, or approve a refund. So every record the ledger publishes there carries a
signature by the ledger's key, and the SDK's followers obey only records whose signature
verifies (docs/security.md).

What is signed: ``purpose + "\\n" + JCS(record without its "signature" member)``, the RFC
8785 canonical form (:mod:`agentledger.schemas.canonical`) of the JSON that crossed Kafka, so a
verifier in any language computes the same bytes, and a record added fields by a later
schema version still verifies. ``purpose`` separates the kinds of signed things (a control
signal can never pass as an approval, or a later Merkle checkpoint as either).

The envelope (:func:`envelope`) names the algorithm and a *key id* (the first 16 hex
digits of the SHA-256 of the raw public key), so a verifier can hold several trusted keys
at once: rotation (:func:`rotate`) creates a new current key and keeps the old public key
trusted, so records signed before the rotation (still in the compacted topics) verify.

Where the key lives: ``<ledger_key_dir or data_dir/keys>/ledger.key``, the raw private key
in base64, mode 0600 in a 0700 directory, created on first use by whichever process needs
it first (an exclusive link, so two processes starting together agree on one key).
``ledger.pub`` beside it is the public key for agents elsewhere: copy it, or its content,
into ``AGENTLEDGER_LEDGER_PUBLIC_KEY``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentledger.core import discovery
from agentledger.core.settings import Settings
from agentledger.schemas.canonical import NotCanonicalizable, canonicalize

log = logging.getLogger(__name__)

ALG: Final = "ed25519"
PRIVATE_FILE: Final = "ledger.key"
PUBLIC_FILE: Final = "ledger.pub"
RETIRED_DIR: Final = "retired"

CONTROL: Final = "agentledger.control.v1"
"""Purpose of a control signal on ``agent.control`` (breaker, safe mode, budget,
override, heartbeat)."""
APPROVAL: Final = "agentledger.approval.v1"
"""Purpose of an approval state on ``agent.approvals``."""
CHECKPOINT: Final = "agentledger.checkpoint.v1"
"""Reserved: Merkle checkpoints of the event log (a later issue), same key."""

Check = Literal["ok", "unsigned", "forged"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def message(purpose: str, payload: Mapping[str, Any]) -> bytes:
    """The signed bytes: purpose, newline, JCS of ``payload`` without ``signature``."""
    body = {k: v for k, v in payload.items() if k != "signature"}
    return purpose.encode() + b"\n" + canonicalize(body)


@dataclass(frozen=True)
class LedgerKey:
    """The ledger's private key (current one). Signing is ~50 µs."""

    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    key_id: str

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> LedgerKey:
        public = private.public_key()
        return cls(private, public, key_id(public))

    @classmethod
    def generate(cls) -> LedgerKey:
        return cls.from_private(Ed25519PrivateKey.generate())

    @property
    def public_text(self) -> str:
        """The public key as one line (what ``ledger.pub`` and the setting hold)."""
        return public_text(self.public)

    def sign(self, purpose: str, payload: Mapping[str, Any]) -> dict[str, str]:
        """The signature envelope of ``payload``; NotCanonicalizable if JCS cannot hold it."""
        return envelope(self.key_id, self.private.sign(message(purpose, payload)))

    def keyring(self) -> Keyring:
        """A keyring that trusts exactly this key (a signer verifying its own topic)."""
        return Keyring({self.key_id: self.public})


def envelope(kid: str, signature: bytes) -> dict[str, str]:
    return {"alg": ALG, "key_id": kid, "sig": _b64(signature)}


@dataclass
class Keyring:
    """The public keys a follower trusts, by key id (more than one during a rotation)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Keyring:
        """Base64 raw public keys, or paths of ``.pub`` files holding one."""
        ring = cls()
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            path = Path(entry).expanduser()
            text = path.read_text().strip() if ("/" in entry or entry.endswith(".pub")) \
                and path.is_file() else entry
            ring.add(public_from_text(text))
        return ring

    def add(self, public: Ed25519PublicKey) -> None:
        self.keys[key_id(public)] = public

    def __bool__(self) -> bool:
        return bool(self.keys)

    def check(self, purpose: str, payload: Mapping[str, Any]) -> Check:
        """``ok`` if ``payload["signature"]`` is a valid signature of ``payload`` by a
        trusted key; ``unsigned`` without one; ``forged`` for anything else (a bad
        signature, an unknown key id, a payload JCS cannot hold, a malformed envelope)."""
        sig = payload.get("signature")
        if sig is None:
            return "unsigned"
        if not isinstance(sig, Mapping) or sig.get("alg") != ALG:
            return "forged"
        public = self.keys.get(str(sig.get("key_id")))
        if public is None:
            return "forged"
        try:
            public.verify(_unb64(str(sig.get("sig", ""))), message(purpose, payload))
        except (InvalidSignature, NotCanonicalizable, binascii.Error, ValueError):
            return "forged"
        return "ok"


def public_text(public: Ed25519PublicKey) -> str:
    """A public key as one line (base64url of the raw key), as ``ledger.pub`` holds it."""
    return _b64(_raw_public(public))


def public_from_text(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(text.strip()))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not an ed25519 public key: {text[:16]!r}…") from exc


# -- where keys live ----------------------------------------------------------------------


def key_dir(settings: Settings) -> Path:
    return settings.ledger_key_dir or settings.data_dir / "keys"


def _write_private(directory: Path, key: LedgerKey) -> bool:
    """Create ``ledger.key`` exclusively; False if another process made one first."""
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        directory.chmod(0o700)
    raw = key.private.private_bytes_raw()
    tmp = directory / f".{PRIVATE_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_b64(raw) + "\n")
    try:
        os.link(tmp, directory / PRIVATE_FILE)  # atomic and exclusive: first one wins
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _publish_public(directory: Path, key: LedgerKey) -> None:
    path = directory / PUBLIC_FILE
    tmp = directory / f".{PUBLIC_FILE}.{os.getpid()}.tmp"
    tmp.write_text(key.public_text + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)


def load_key(directory: Path) -> LedgerKey | None:
    try:
        text = (directory / PRIVATE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    mode = (directory / PRIVATE_FILE).stat().st_mode & 0o077
    if mode:
        raise PermissionError(f"{directory / PRIVATE_FILE} is readable by others "
                              f"(mode {oct(mode)}): chmod 600 it")
    return LedgerKey.from_private(Ed25519PrivateKey.from_private_bytes(_unb64(text)))


def load_or_create(directory: Path) -> LedgerKey:
    """The current key of ``directory``, created (0600) if there is none yet."""
    key = load_key(directory)
    if key is None:
        fresh = LedgerKey.generate()
        _write_private(directory, fresh)
        key = load_key(directory)
        assert key is not None
        log.info("ledger signing key created", extra={"key_id": key.key_id,
                                                      "dir": str(directory)})
    if not (directory / PUBLIC_FILE).is_file() or \
            (directory / PUBLIC_FILE).read_text().strip() != key.public_text:
        _publish_public(directory, key)
    return key


def ledger_key(settings: Settings) -> LedgerKey:
    """The key this process signs with (the API, stream workers, ``safe-mode``)."""
    return load_or_create(key_dir(settings))


def rotate(directory: Path) -> LedgerKey:
    """Make a new current key; the old public key stays trusted as ``<key_id>.pub``
    (records it signed are still in the compacted topics), its private key is moved to
    ``retired/``. Delete the old ``.pub`` once every record it signed was superseded."""
    old = load_key(directory)
    if old is not None:
        (directory / f"{old.key_id}.pub").write_text(old.public_text + "\n")
        retired = directory / RETIRED_DIR
        retired.mkdir(mode=0o700, exist_ok=True)
        (directory / PRIVATE_FILE).replace(retired / f"{old.key_id}.key")
    return load_or_create(directory)


def local_keyring(directory: Path) -> Keyring:
    """Every public key a key directory trusts: the current and the rotated-out ones."""
    return Keyring.parse(str(p) for p in sorted(directory.glob("*.pub")))


def trusted_keys(settings: Settings, bootstrap: str | None) -> Keyring | None:
    """The keys a follower of ``bootstrap`` verifies with, or None (not verifying).

    In order: ``AGENTLEDGER_LEDGER_PUBLIC_KEY``; else ``AGENTLEDGER_LEDGER_KEY_DIR`` if it
    is set (a ledger process sharing the signing key, such as the API's control stream in
    compose: the key is created there if it is missing, so the keyring is never empty);
    else, if ``bootstrap`` is the broker the local embedded stack of ``settings.data_dir``
    published (``agentledger up``), that stack's key directory (created if missing).
    None otherwise: a follower
    with no key cannot tell the ledger's records from anyone's, says so once in the log,
    and counts what it accepted unverified (the behaviour before signing, for clients that
    were never given a key).
    """
    if settings.ledger_public_key.strip():
        return Keyring.parse(settings.ledger_public_key.split(","))
    if settings.ledger_key_dir is not None:
        own = load_or_create(settings.ledger_key_dir)
        ring = local_keyring(settings.ledger_key_dir)
        ring.add(own.public)
        return ring
    info = discovery.lookup(settings, discovery.BROKER_FILE)
    if bootstrap and info and info.get("bootstrap") == bootstrap:
        # the local stack signs with this directory's key; made here if this follower
        # is first (a worker starting later loads the same one), so never left unverified
        own = load_or_create(key_dir(settings))
        ring = local_keyring(key_dir(settings))
        ring.add(own.public)
        return ring
    return None


LOGGED_REFUSALS: Final = 20
"""Refusals logged one by one per reason; after that every 1000th (a flood of forgeries
must not flood the log), the counters keep the exact number."""


class Verifier:
    """A follower's gate: which records it obeys, and a count of those it did not.

    With a keyring, only records signed by a trusted key pass; unsigned and forged ones
    are refused, counted (:attr:`counts`) and logged. Without one (no key configured, see
    :func:`trusted_keys`) records pass unverified, counted as ``unverified``, with one
    warning at the first.
    """

    def __init__(self, keyring: Keyring | None, purpose: str, topic: str):
        self.keyring = keyring
        self.purpose = purpose
        self.topic = topic
        self.counts: dict[str, int] = {"verified": 0, "unverified": 0, "unsigned": 0,
                                       "forged": 0, "tombstone": 0, "future": 0}

    @property
    def verifying(self) -> bool:
        return bool(self.keyring)

    def admit(self, payload: Mapping[str, Any], key: str = "") -> bool:
        """True if the record ``payload`` (the parsed JSON of a message) may be obeyed."""
        if not self.keyring:
            self.counts["unverified"] += 1
            if self.counts["unverified"] == 1:
                log.warning("no ledger public key configured: records on %s are obeyed "
                            "unverified (set AGENTLEDGER_LEDGER_PUBLIC_KEY)", self.topic)
            return True
        verdict = self.keyring.check(self.purpose, payload)
        if verdict == "ok":
            self.counts["verified"] += 1
            return True
        self.refuse(verdict, key)
        return False

    def refuse(self, reason: str, key: str = "") -> None:
        """Count and log one record not obeyed (``unsigned``, ``forged``, ``tombstone``,
        ``future``)."""
        self.counts[reason] = n = self.counts.get(reason, 0) + 1
        if n <= LOGGED_REFUSALS or n % 1000 == 0:
            log.warning("ignored a %s record on %s (key %s; %d so far)", reason, self.topic,
                        key or "?", n, extra={"topic": self.topic, "reason": reason,
                                               "key": key, "count": n})

    @property
    def refused(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in ("verified", "unverified"))

    def report(self) -> dict[str, Any]:
        """For health and stats: whether records are verified, and what was refused."""
        return {"verifying": self.verifying,
                "key_ids": sorted(self.keyring.keys) if self.keyring else [],
                **self.counts}


def sign_record(key: LedgerKey, purpose: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` (parsed JSON, without a signature) with its ``signature`` envelope."""
    body = {k: v for k, v in record.items() if k != "signature"}
    return {**body, "signature": key.sign(purpose, body)}


def sign_json(key: LedgerKey, purpose: str, value: bytes) -> bytes:
    """A record's JSON (as a model's ``to_json`` writes it) with its signature added:
    the bytes to publish."""
    record = orjson.loads(value)
    if not isinstance(record, dict):
        raise TypeError("only JSON objects are signed")
    return orjson.dumps(sign_record(key, purpose, record))
