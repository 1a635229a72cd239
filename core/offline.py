"""Check a replay bundle offline, with the ledger's public key alone.

A bundle (``agentledger replay``, ``GET /v1/replay``) carries, per run, its events and an
inclusion proof (``agentledger.queries.inclusion``) of its last event against a signed
tree head. Four checks make the bundle evidence without the ledger:

1. the run's hash chain recomputes from the bundle's events (``schemas/integrity.py``),
   so the last event's hash covers every event;
2. the proof's leaf is that last event (tenant, run, event id, hash);
3. the RFC 9162 audit path leads from the leaf's hash to the head's root;
4. the head is signed by a trusted ledger key (ed25519 over
   ``agentledger.checkpoint.v1\\n{log_id}\\n{tree_size}\\n{root_hash}\\n{issued_at_ms}\\n``).

The same steps in Node are in tests/shell/bundle_check.test.mjs. No store, no network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature

from agentledger.core import merkle, signing
from agentledger.schemas.integrity import verify_chain

INCLUDED = "included"


def head_message(head: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return (f"{signing.CHECKPOINT}\n{head['log_id']}\n{int(head['tree_size'])}\n"
            f"{head['root_hash']}\n{int(head['issued_at_ms'])}\n").encode()


def head_signed(head: Mapping[str, Any], keyring: signing.Keyring) -> bool:
    """Is ``head`` signed by a key of ``keyring`` (hex or base64url signature)?"""
    public = keyring.keys.get(str(head.get("key_id")))
    if public is None:
        return False
    text = str(head.get("signature", ""))
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return False
    try:
        public.verify(raw, head_message(head))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False
    return True


def check_run(run: Mapping[str, Any], keyring: signing.Keyring) -> list[str]:
    """Problems with one run of a bundle (empty: the run is proven in a signed head)."""
    run_id = str(run.get("run_id"))
    events: Sequence[Mapping[str, Any]] = run.get("events") or []
    if not events:
        return [f"run {run_id}: no events in the bundle"]
    chain = verify_chain(events)
    if not chain.ok:
        return [f"run {run_id}: chain broken at seq {chain.broken_seq}: {chain.problem}"]
    proof = run.get("inclusion")
    if not isinstance(proof, Mapping):
        return [f"run {run_id}: the bundle carries no inclusion proof"]
    if proof.get("status") != INCLUDED:
        return [f"run {run_id}: not yet in a signed head (status {proof.get('status')})"]
    last = events[-1]
    leaf = proof.get("leaf") or {}
    mine = {"tenant": last.get("tenant"), "run_id": last.get("run_id"),
            "event_id": last.get("event_id"), "event_hash": last.get("hash")}
    if {k: str(v) for k, v in mine.items()} != {k: str(leaf.get(k)) for k in mine}:
        return [f"run {run_id}: the proof's leaf is not the run's last event"]
    head = proof.get("head") or {}
    try:
        leaf_hash = merkle.leaf_hash(merkle.leaf_input(**{k: str(v) for k, v in mine.items()}))
        path = [bytes.fromhex(p) for p in proof.get("proof", [])]
        included = merkle.verify_inclusion(
            leaf_hash, int(proof["leaf_index"]), int(head["tree_size"]), path,
            bytes.fromhex(str(head["root_hash"])))
    except (KeyError, TypeError, ValueError) as exc:
        return [f"run {run_id}: malformed inclusion proof ({exc})"]
    if not included:
        return [f"run {run_id}: the audit path does not lead to the head's root"]
    if int(proof.get("tree_size", head["tree_size"])) != int(head["tree_size"]):
        return [f"run {run_id}: the proof's tree size is not the head's"]
    if not head_signed(head, keyring):
        return [f"run {run_id}: the head of {head.get('log_id')} at size "
                f"{head.get('tree_size')} is not signed by a trusted key"]
    return []


def check_bundle(bundle: Mapping[str, Any], keyring: signing.Keyring) -> list[str]:
    """Problems with every run of a replay bundle; empty when all are proven."""
    runs = bundle.get("runs")
    if not isinstance(runs, list) or not runs:
        return ["not a replay bundle: no runs"]
    return [problem for run in runs for problem in check_run(run, keyring)]
