"""The verifier's side of a witness copy (``agentledger checkpoints export DIR``): read it,
hold it to itself, and name the first leaf where the store differs from it.

The witness is read where the verifier runs and never sent to the store: only its signed
heads and public keys go to ``POST /v1/ledger/verify`` (:mod:`ledger_verify`), and the
store's leaves around the first failing head come back to be compared here. The
witness's leaves are trusted only once they recompute its signed heads' roots
(:func:`check_witness`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentledger.core import merkle, signing
from agentledger.core.merkle_levels import Levels
from agentledger.queries.ledger_verify import Head, log_id


@dataclass
class Witness:
    """A witness copy (``agentledger checkpoints export DIR``): heads and leaves per log,
    and the ledger's public keys."""

    heads: dict[str, list[Head]] = field(default_factory=dict)
    leaves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    keyring: signing.Keyring = field(default_factory=signing.Keyring)

    def leaf_hashes(self, log: str) -> bytes:
        return b"".join(merkle.leaf_hash(merkle.leaf_input(
            str(leaf["tenant"]), str(leaf["run_id"]), str(leaf["event_id"]),
            str(leaf["event_hash"]))) for leaf in self.leaves.get(log, []))


def read_witness(directory: Path) -> Witness:
    """Read a witness directory: every ``*.jsonl`` line with a ``tree_size`` is a head,
    one with an ``event_id`` a leaf (of the line's ``log_id``, or the log the file's
    heads name); ``keys.json`` holds public keys. ValueError on anything unreadable."""
    if not directory.is_dir():
        raise ValueError(f"no witness directory {directory}")
    witness = Witness()
    keys_file = directory / "keys.json"
    if keys_file.is_file():
        for text in _key_texts(json.loads(keys_file.read_text())):
            witness.keyring.add(signing.public_from_text(text))
    for path in sorted(directory.rglob("*.jsonl")):
        file_log: str | None = None
        pending: list[dict[str, Any]] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            try:
                if "tree_size" in item:
                    head = Head.from_dict(item)
                    file_log = file_log or head.log_id
                    witness.heads.setdefault(head.log_id, []).append(head)
                elif "event_id" in item:
                    pending.append(item)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
        for item in pending:
            log = str(item.get("log_id") or file_log or _log_from_name(path))
            witness.leaves.setdefault(log, []).append(item)
    for log, items in witness.leaves.items():
        items.sort(key=lambda x: int(x.get("index", x.get("leaf_index", 0))))
        for position, item in enumerate(items):
            index = int(item.get("index", item.get("leaf_index", position)))
            if index != position:
                raise ValueError(f"witness leaves of {log}: index {index} where {position} "
                                 "was expected")
    for heads in witness.heads.values():
        heads.sort(key=lambda h: (h.tree_size, h.issued_at_ms))
    return witness


SENT_HEADS = 5000
"""Witnessed heads sent to the store per log at most: the latest (which covers every
earlier leaf) and others spread evenly over the log, which only narrow where a difference
is looked for. A witness of a busy ledger holds a head every few seconds."""


def heads_to_send(witness: Witness) -> list[Head]:
    """Every log's witnessed heads, thinned to :data:`SENT_HEADS` per log."""
    sent: list[Head] = []
    for heads in witness.heads.values():
        if len(heads) <= SENT_HEADS:
            sent.extend(heads)
            continue
        step = (len(heads) - 1) / (SENT_HEADS - 1)
        sent.extend(heads[round(i * step)] for i in range(SENT_HEADS))
    return sent


def check_witness(witness: Witness) -> list[str]:
    """The witness held to itself: its leaves recompute every head's root, and its latest
    head per log (which then vouches for every earlier one) and any head its leaves do not
    reproduce are signed by a trusted key. Its leaves are authenticated by the signed
    heads they match, so only then can they name a difference in the store."""
    problems = []
    for log, heads in sorted(witness.heads.items()):
        levels = Levels(witness.leaf_hashes(log)) if log in witness.leaves else None
        for head in heads:
            matches = levels is not None and head.tree_size <= levels.size and \
                levels.root(head.tree_size).hex() == head.root_hash
            if (head is heads[-1] or not matches) and not head.signed_by(witness.keyring):
                problems.append(f"witness {log}: head at size {head.tree_size} is not "
                                f"signed by a trusted key (key id {head.key_id or '?'})")
            elif levels is not None and not matches:
                problems.append(f"witness {log}: its own leaves do not give the root of its "
                                f"head at size {head.tree_size}; the witness copy is "
                                "damaged")
    return problems


def public_texts(keyring: signing.Keyring) -> list[str]:
    """The keyring's public keys as ``ledger.pub`` writes them."""
    return [base64.urlsafe_b64encode(p.public_bytes(Encoding.Raw, PublicFormat.Raw))
            .decode().rstrip("=") for p in keyring.keys.values()]


def _key_texts(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, list):
        for item in data:
            yield from _key_texts(item)
    elif isinstance(data, dict):
        for name in ("public_key", "public", "key"):
            if isinstance(data.get(name), str):
                yield data[name]
                return
        for name, value in data.items():
            if name in ("keys", "public_keys") or isinstance(value, str | dict | list):
                yield from _key_texts(value)


def _log_from_name(path: Path) -> str:
    stem = path.stem.removesuffix(".leaves").removesuffix("-leaves").removesuffix(".heads")
    if "_" in stem and stem.rsplit("_", 1)[1].isdigit():
        return log_id(int(stem.rsplit("_", 1)[1]))
    if "-" in stem and stem.rsplit("-", 1)[1].isdigit():
        return log_id(int(stem.rsplit("-", 1)[1]))
    raise ValueError(f"{path}: leaves with no log_id")


def name_difference(log: str, store_window: Sequence[Mapping[str, Any]],
                    witness_leaves: Sequence[Mapping[str, Any]], lo: int
                    ) -> dict[str, Any] | None:
    """The first leaf from ``lo`` on where the store and the witness differ, and what
    changed: ``deleted`` (the witness's event is not in the store's window), ``inserted``
    (the store's event is nowhere in the witness), ``altered`` (same event id, other
    contents) or ``reordered`` (both events exist, elsewhere). None if they agree."""
    witness_ids = {str(w["event_id"]) for w in witness_leaves}
    store_ids = {str(s["event_id"]) for s in store_window}
    end = max(len(witness_leaves), lo + len(store_window))
    for index in range(lo, end):
        w = witness_leaves[index] if index < len(witness_leaves) else None
        s = store_window[index - lo] if index - lo < len(store_window) else None
        if w is not None and s is not None and all(
                str(w[k]) == str(s[k]) for k in ("event_id", "tenant", "run_id",
                                                 "event_hash")):
            continue
        if w is None and s is not None:
            if str(s["event_id"]) in witness_ids:
                return _named(log, index, "reordered", s, f"event {s['event_id']} moved "
                              f"after the witness's last leaf")
            return _named(log, index, "inserted", s, "not in the witness: a leaf beyond "
                          "every witnessed head")
        if w is None:  # pragma: no cover - end bounds it
            return None
        if s is None or str(w["event_id"]) not in store_ids:
            what = "" if s is None else f"; the store has event {s['event_id']} there"
            return _named(log, index, "deleted", w, f"the store no longer holds it{what}")
        if str(w["event_id"]) == str(s["event_id"]):
            changed = [k for k in ("tenant", "run_id", "event_hash") if str(w[k]) != str(s[k])]
            return _named(log, index, "altered", w, "changed: " + ", ".join(
                f"{k} {w[k]} → {s[k]}" for k in changed), store=s)
        if str(s["event_id"]) not in witness_ids:
            return _named(log, index, "inserted", s, f"not in the witness; the witness has "
                          f"event {w['event_id']} (run {w['run_id']}) there", witness=w)
        return _named(log, index, "reordered", w, f"the store has event {s['event_id']} "
                      f"(run {s['run_id']}) at this index", store=s)
    return None


def _named(log: str, index: int, change: str, leaf: Mapping[str, Any], detail: str,
           **other: Mapping[str, Any]) -> dict[str, Any]:
    found = {"log_id": log, "index": index, "change": change,
             "event_id": str(leaf["event_id"]), "run_id": str(leaf["run_id"]),
             "tenant": str(leaf["tenant"]), "detail": detail}
    for name, value in other.items():
        found[name] = dict(value)
    return found


def describe(named: Mapping[str, Any]) -> str:
    """One line naming a differing leaf."""
    return (f"{named['log_id']} leaf {named['index']}: {named['change'].upper()} event "
            f"{named['event_id']} of run {named['run_id']} (tenant {named['tenant']}): "
            f"{named['detail']}")
