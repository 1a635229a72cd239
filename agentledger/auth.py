"""API keys: who may read which tenants' rows.

A key is a random token (``al_`` + 43 url-safe characters) shown once when created; the
server keeps only its sha256. Random 256-bit tokens need no slow hash: nobody can guess
one from its digest, and a dict lookup by digest leaks no useful timing.

Keys come from a YAML/JSON file (``AGENTLEDGER_API_KEYS_FILE``, default
``<data_dir>/api-keys.yaml``) and from ``AGENTLEDGER_API_KEYS`` (a JSON list of the same
entries). Each entry names the tenants it may read; ``"*"`` means every tenant and makes
the key an operator key, the only kind allowed raw SQL, revenue writes and store
metadata. A service that owns the store also mints an operator key for its own machine
(``<data_dir>/run/api.key``, mode 0600), which is how the local CLI authenticates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from agentledger.core.settings import Settings
from agentledger.schemas.events import SCOPE_NAME_PATTERN, scope_name_error

ALL_TENANTS = "*"
KEY_PREFIX = "al_"
OPERATOR_KEY_FILE = "api.key"


class KeyConfigError(ValueError):
    """The keys file or variable is malformed; the message says where."""


def _name_error(value: str) -> str | None:
    return scope_name_error(value) or (
        None if re.match(SCOPE_NAME_PATTERN, value) and len(value) <= 128
        else f"{value[:64]!r} is not a tenant or agent name "
             f"(pattern {SCOPE_NAME_PATTERN}, at most 128 characters)")


def _tenant_names(values: list[str]) -> list[str]:
    """Tenants a key names follow the events' rule (no ``/`` or ``:``): a key for
    ``acme/eu`` would otherwise be read as acme's wherever a scope is split."""
    for value in values:
        if value != ALL_TENANTS and (error := _name_error(value)) is not None:
            raise ValueError(error)
    return values


def _agent_names(values: list[str]) -> list[str]:
    """An agent is named bare (``refund-agent``) or with its tenant (``acme/refund-agent``):
    one ``/`` at most, between two names that follow the events' rule."""
    for value in values:
        parts = value.split("/", 1) if value.count("/") == 1 else [value]
        for part in parts:
            if (error := _name_error(part)) is not None:
                raise ValueError(f"agent {value[:64]!r}: {error}")
    return values


class KeyEntry(BaseModel):
    """One configured key, as stored: never the key itself."""

    name: str = Field(min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenants: Annotated[list[str], AfterValidator(_tenant_names)] = Field(min_length=1)
    roles: list[str] = Field(default_factory=list, description="approval queues it may decide")
    agents: Annotated[list[str], AfterValidator(_agent_names)] = Field(
        default_factory=list, description="agents it acts for: it may not approve their requests")
    expires: datetime | None = Field(
        default=None, description="refused from this instant on (checked at every request)")
    revoked: bool = Field(default=False, description="refused: `agentledger keys revoke`")

    def stored(self) -> dict[str, Any]:
        """The entry as the keys file keeps it: the lifetime fields only when set, so a
        key that never dies reads as it did before keys could die."""
        document = self.model_dump(mode="json")
        if self.expires is None:
            del document["expires"]
        if not self.revoked:
            del document["revoked"]
        return document

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``: what ``keys list`` shows."""
        if self.revoked:
            return "revoked"
        if self.expires is not None and _aware(self.expires) <= (now or datetime.now(UTC)):
            return "expired"
        return "active"


def _aware(moment: datetime) -> datetime:
    """A naive expiry (hand-written YAML) is read as UTC, never as the server's zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a key's name and the tenants its rows may come from."""

    name: str
    tenants: frozenset[str] | None  # None: every tenant
    roles: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    expires_at: float | None = None  # epoch seconds; None: never

    @property
    def operator(self) -> bool:
        return self.tenants is None

    def allowed(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def entry_for(name: str, key: str, tenants: Iterable[str], *, roles: Iterable[str] = (),
              agents: Iterable[str] = (), expires: datetime | None = None) -> KeyEntry:
    return KeyEntry(name=name, sha256=hash_key(key), tenants=sorted(set(tenants)),
                    roles=sorted(set(roles)), agents=sorted(set(agents)), expires=expires)


class KeySource(Protocol):
    """What a server asks of its keys: a :class:`KeyRing` (fixed, for tests and benches)
    or a :class:`ReloadingKeyRing` (every service: the API and the intake alike)."""

    def authenticate(self, presented: str) -> Principal | None: ...


class KeyRing:
    """The keys a server accepts, by digest."""

    def __init__(self, entries: Iterable[KeyEntry] = ()):
        self._by_hash: dict[str, Principal] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: KeyEntry) -> None:
        """A revoked entry is left out: its digest authenticates nobody."""
        if entry.revoked:
            self._by_hash.pop(entry.sha256, None)
            return
        tenants = None if ALL_TENANTS in entry.tenants else frozenset(entry.tenants)
        expires_at = None if entry.expires is None else _aware(entry.expires).timestamp()
        self._by_hash[entry.sha256] = Principal(entry.name, tenants, frozenset(entry.roles),
                                                frozenset(entry.agents), expires_at)

    def authenticate(self, presented: str) -> Principal | None:
        """The key's principal, unless it has expired: checked now, at every request, so
        a key dies on time even when no file changed to trigger a reload."""
        principal = self._by_hash.get(hash_key(presented))
        if principal is None or (principal.expires_at is not None
                                 and time.time() >= principal.expires_at):
            return None
        return principal

    def __len__(self) -> int:
        return len(self._by_hash)

    def principals(self) -> list[Principal]:
        """Every key's principal (names, scopes, roles; never a key or digest): who holds
        which approver role, for the permissions view."""
        return list(self._by_hash.values())


def keys_file(settings: Settings) -> Path:
    return settings.api_keys_file or settings.data_dir / "api-keys.yaml"


def load_entries(settings: Settings) -> list[KeyEntry]:
    """Every configured key entry: the file's, then the environment's."""
    entries = []
    path = keys_file(settings)
    if path.exists():
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise KeyConfigError(f"{path}: not valid YAML: {exc}") from None
        entries += _parse(document.get("keys", []) if isinstance(document, dict) else document,
                          str(path))
    entries += _parse(settings.api_keys, "AGENTLEDGER_API_KEYS")
    return entries


def _parse(raw: Any, where: str) -> list[KeyEntry]:
    if not isinstance(raw, list):
        raise KeyConfigError(f"{where}: expected a list of keys")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(KeyEntry.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            raise KeyConfigError(f"{where}: key {i}: {field}: {first['msg']}") from None
    return entries


def append_entry(settings: Settings, entry: KeyEntry) -> Path:
    """Add a key entry to the keys file (created 0600 if missing)."""
    path = keys_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"keys": []}
    if path.exists():
        document = yaml.safe_load(path.read_text()) or {"keys": []}
    if any(k.get("name") == entry.name for k in document.get("keys", [])):
        raise KeyConfigError(f"{path}: a key named {entry.name!r} exists already")
    document.setdefault("keys", []).append(entry.stored())
    _write_keys(path, document)
    return path


def _write_keys(path: Path, document: dict[str, Any]) -> None:
    """Write the keys file 0600 through a new file renamed over the old one: a serving
    process never reads half a file, and the new inode marks the change for its ring."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    tmp.replace(path)


def revoke_entry(settings: Settings, name: str) -> Path:
    """Mark the named key revoked in the keys file. The entry stays (``keys list`` shows
    who it was and that it is dead); every serving process refuses it within
    :data:`RELOAD_INTERVAL_S` plus one request."""
    path = keys_file(settings)
    document = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    found = [k for k in document.get("keys", []) if k.get("name") == name]
    if not found:
        where = (" (it comes from AGENTLEDGER_API_KEYS: remove it there)"
                 if any(e.name == name for e in _parse(settings.api_keys, "env")) else "")
        raise KeyConfigError(f"{path}: no key named {name!r}{where}")
    for entry in found:
        entry["revoked"] = True
    _write_keys(path, document)
    return path


def mint_operator_key(settings: Settings) -> tuple[str, KeyEntry]:
    """A fresh operator key for this machine's CLI, written 0600 under the run dir."""
    key = new_key()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / OPERATOR_KEY_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    tmp.replace(path)
    return key, entry_for("operator@local", key, [ALL_TENANTS])


def client_key(settings: Settings) -> str | None:
    """The key the CLI presents: AGENTLEDGER_API_KEY, else the local operator key."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    try:
        return (settings.run_dir / OPERATOR_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


RELOAD_INTERVAL_S = 0.5
"""How often a serving process looks at its key files at most. A key removed from the
file is refused by every process (the ledger API, the OTLP intake) within this plus one
request: under the 1 s the security review asks for, for two ``stat`` calls a request."""


class ReloadingKeyRing:
    """The configured keys and this machine's operator key, read again when their files
    change (checked at most every :data:`RELOAD_INTERVAL_S`). Every serving process uses
    this one class, so there is one truth about keys: the ledger API and the OTLP intake
    accept a key added with ``agentledger keys`` and the operator key a restarted store
    minted, and refuse a removed key, without a restart of their own."""

    def __init__(self, settings: Settings, min_interval_s: float = RELOAD_INTERVAL_S):
        self.settings = settings
        self.min_interval_s = min_interval_s
        self._ring = KeyRing()
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def _files(self) -> tuple[Path, Path]:
        return keys_file(self.settings), self.settings.run_dir / OPERATOR_KEY_FILE

    @staticmethod
    def _stamp_of(path: Path) -> tuple[int, int, int]:
        """The file's identity and change time: an editor that writes a new file and
        renames it over the old one changes the inode even within one mtime tick."""
        try:
            st = path.stat()
        except OSError:
            return (-1, -1, -1)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self.min_interval_s:
            return
        with self._lock:  # one reader of the files at a time; the others use the last ring
            self._checked = now
            stamp = tuple(self._stamp_of(p) for p in self._files())
            if stamp == self._stamp:
                return
            self._reload(stamp)

    def _reload(self, stamp: tuple[tuple[int, int, int], ...]) -> None:
        try:
            entries = load_entries(self.settings)
        except KeyConfigError as exc:  # mid-edit: keep serving the keys read last
            logging.getLogger(__name__).warning("keys not reloaded", extra={"error": str(exc)})
            return
        try:
            operator = self._files()[1].read_text().strip()
        except OSError:
            operator = ""
        if operator:
            entries.append(entry_for("operator@local", operator, [ALL_TENANTS]))
        self._ring, self._stamp = KeyRing(entries), stamp

    def authenticate(self, presented: str) -> Principal | None:
        self._refresh()
        return self._ring.authenticate(presented)

    def __len__(self) -> int:
        self._refresh()
        return len(self._ring)

    def principals(self) -> list[Principal]:
        self._refresh()
        return self._ring.principals()
