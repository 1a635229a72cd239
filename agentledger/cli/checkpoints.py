"""``agentledger checkpoints export DIR [--follow]``: the witness, a copy outside the store.

Signed heads prove nothing if the only copy lives in the database an attacker can write:
the witness copies every head (and the leaves needed to recompute them and to name a
differing leaf) into a directory that should live elsewhere (docs/integrity.md, "The
witness": object storage with object lock, another account).

Layout of DIR (read by ``agentledger verify --ledger --witness DIR``):

- ``keys.json``: every ledger public key the witness ever saw, by key id (never pruned, so
  heads signed before a rotation keep verifying);
- ``<log>.heads.jsonl``: one signed head per line (``log_id, tree_size, root_hash,
  issued_at_ms, key_id, signature``), ``<log>`` being the log id with ``/`` as ``_``;
- ``<log>.leaves.jsonl``: leaf ``index`` 0.. in order (``log_id, index, event_id, run_id,
  tenant, event_hash, kafka_offset``).

Guarantees: a head is written only if its signature verifies with a key in ``keys.json``;
leaves are appended only when they recompute the root of every head they reach; files are
append-only and a re-export appends only what is new (idempotent). A head whose root the
store's leaves do not reproduce, or two heads of one size with different roots, are
reported and exit 1: the witness keeps the signed heads, which is what later proves it.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import JsonFlag
from agentledger.cli.render import UserError, err, print_json
from agentledger.core import checkpoint, merkle, signing

checkpoints_app = typer.Typer(help="Signed checkpoints of the ledger's Merkle logs: copy "
                              "them to a witness outside the store.", no_args_is_help=True)

PAGE = 10_000
KEYS_FILE = "keys.json"

_HEADS_SQL = ("SELECT DISTINCT log_id, tree_size, root_hash, toUnixTimestamp64Milli(issued_at), "
              "key_id, signature FROM checkpoints ORDER BY log_id, tree_size")
_LEAVES_SQL = ("SELECT leaf_index, event_id, run_id, tenant, event_hash, kafka_offset "
               "FROM ledger_leaves WHERE log_id = {log:String} AND leaf_index >= {lo:UInt64} "
               "AND leaf_index < {hi:UInt64} ORDER BY leaf_index LIMIT 1 BY leaf_index "
               "LIMIT {n:UInt32}")

Query = Callable[[str, dict[str, Any] | None], list[list[Any]]]


def file_stem(log: str) -> str:
    return log.replace("/", "_")


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise UserError(f"{path}:{number} is not JSON: the witness is damaged"
                                    ) from None


@dataclass
class WitnessLog:
    """One log as the witness holds it: its heads and the tree of its leaves."""

    log_id: str
    tree: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    heads: dict[int, set[str]] = field(default_factory=dict)
    """tree size → roots of the witnessed heads of that size"""
    seen: set[tuple[int, str, int, str]] = field(default_factory=set)
    roots: dict[int, str] = field(default_factory=dict)
    """root at every head size the leaves reach"""


@dataclass
class Report:
    heads_written: int = 0
    leaves_written: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"heads_written": self.heads_written, "leaves_written": self.leaves_written,
                "problems": self.problems}


class Witness:
    """A witness directory, loaded once, then fed heads from the store and the topic."""

    def __init__(self, directory: Path, keyring: signing.Keyring):
        self.dir = directory
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot use {directory} as the witness directory: {exc}"
                            ) from None
        self.keys: dict[str, str] = {}
        for item in _key_items(self.dir / KEYS_FILE):
            self.keys[item["key_id"]] = item["public_key"]
        for kid, public in keyring.keys.items():
            self.keys.setdefault(kid, signing.public_text(public))
        if not self.keys:
            raise UserError(f"no ledger public key: none in {directory / KEYS_FILE}, the "
                            "key directory, AGENTLEDGER_LEDGER_PUBLIC_KEY or --public-key")
        self.keyring = signing.Keyring()
        for text in self.keys.values():
            self.keyring.add(signing.public_from_text(text))
        self._write_keys()
        self.logs: dict[str, WitnessLog] = {}

    def _write_keys(self) -> None:
        body = {"keys": [{"key_id": k, "alg": signing.ALG, "public_key": v}
                         for k, v in sorted(self.keys.items())]}
        tmp = self.dir / f".{KEYS_FILE}.tmp"
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        tmp.replace(self.dir / KEYS_FILE)

    def log(self, log_id: str, sizes: set[int]) -> WitnessLog:
        """The witness's copy of ``log_id``, read from its files the first time."""
        found = self.logs.get(log_id)
        if found is not None:
            return found
        wlog = WitnessLog(log_id)
        stem = file_stem(log_id)
        for item in _lines(self.dir / f"{stem}.heads.jsonl"):
            head = checkpoint.SignedHead.from_dict(item)
            wlog.heads.setdefault(head.tree_size, set()).add(head.root_hash)
            wlog.seen.add(_ident(head))
        wanted = sizes | set(wlog.heads)
        if 0 in wanted:
            wlog.roots[0] = merkle.EMPTY_ROOT.hex()
        for item in _lines(self.dir / f"{stem}.leaves.jsonl"):
            if int(item["index"]) != wlog.tree.size:
                raise UserError(f"{stem}.leaves.jsonl: leaf {item['index']} where "
                                f"{wlog.tree.size} was expected: the witness is damaged")
            wlog.tree.append(_leaf_hash(item))
            if wlog.tree.size in wanted:
                wlog.roots[wlog.tree.size] = wlog.tree.root().hex()
        self.logs[log_id] = wlog
        return wlog

    def absorb(self, heads: list[checkpoint.SignedHead], query: Query) -> Report:
        """Add the heads not witnessed yet (signature checked) and the leaves they cover
        (root checked), appending to the files: leaves first, then heads."""
        report = Report()
        by_log: dict[str, list[checkpoint.SignedHead]] = {}
        for head in heads:
            by_log.setdefault(head.log_id, []).append(head)
        for log_id, log_heads in sorted(by_log.items()):
            self._absorb_log(log_id, sorted(log_heads, key=lambda h: h.tree_size),
                             query, report)
        return report

    def _absorb_log(self, log_id: str, heads: list[checkpoint.SignedHead], query: Query,
                    report: Report) -> None:
        wlog = self.log(log_id, {h.tree_size for h in heads})
        new = [h for h in heads if _ident(h) not in wlog.seen]
        valid = []
        for head in new:
            if checkpoint.verify_head(head, self.keyring):
                valid.append(head)
            else:
                report.problems.append(f"{log_id}: head of size {head.tree_size} (key "
                                       f"{head.key_id}) not signed by a known ledger key: "
                                       "not witnessed")
        for head in valid:
            others = wlog.heads.get(head.tree_size, set()) - {head.root_hash}
            if others:
                report.problems.append(f"{log_id}: two signed heads of size {head.tree_size} "
                                       f"with different roots ({head.root_hash[:16]}…, "
                                       f"{sorted(others)[0][:16]}…)")
        # leaves up to the largest head, checked at every head size they pass
        target = max((h.tree_size for h in valid), default=0)
        sizes: dict[int, set[str]] = {}
        for head in valid:
            sizes.setdefault(head.tree_size, set()).add(head.root_hash)
        for size, roots in sizes.items():
            if size <= wlog.tree.size and size in wlog.roots and \
                    wlog.roots[size] not in roots:
                report.problems.append(f"{log_id}: the witnessed leaves do not give the "
                                       f"signed root at size {size}")
        rows: list[dict[str, Any]] = []
        tree = wlog.tree.copy()
        good_size, good_rows = tree.size, 0
        lo = tree.size
        while lo < target:
            page = query(_LEAVES_SQL, {"log": log_id, "lo": lo, "hi": target,
                                       "n": min(PAGE, target - lo)})
            if not page:
                report.problems.append(f"{log_id}: the store has no leaf {lo} (a head covers "
                                       f"{target}): leaves stop at {good_size}")
                break
            for index, event_id, run_id, tenant, event_hash, offset in page:
                if int(index) != tree.size:
                    report.problems.append(f"{log_id}: the store's leaf {tree.size} is "
                                           "missing")
                    lo = target
                    break
                item = {"log_id": log_id, "index": int(index), "event_id": str(event_id),
                        "run_id": str(run_id), "tenant": str(tenant),
                        "event_hash": str(event_hash), "kafka_offset": int(offset)}
                tree.append(_leaf_hash(item))
                rows.append(item)
                if tree.size in sizes:
                    root = tree.root().hex()
                    if root in sizes[tree.size]:
                        good_size, good_rows = tree.size, len(rows)
                        wlog.roots[tree.size] = root
                    else:
                        report.problems.append(
                            f"{log_id}: the store's leaves give {root[:16]}… at size "
                            f"{tree.size}, the signed head says "
                            f"{sorted(sizes[tree.size])[0][:16]}…: leaves stop at {good_size}")
                        lo = target
                        break
            else:
                lo = tree.size
        stem = file_stem(log_id)
        if good_rows:
            with (self.dir / f"{stem}.leaves.jsonl").open("a") as out:
                out.writelines(json.dumps(r) + "\n" for r in rows[:good_rows])
            for item in rows[:good_rows]:
                wlog.tree.append(_leaf_hash(item))
            report.leaves_written += good_rows
        if valid:
            with (self.dir / f"{stem}.heads.jsonl").open("a") as out:
                out.writelines(json.dumps(h.to_dict()) + "\n" for h in valid)
            for head in valid:
                wlog.heads.setdefault(head.tree_size, set()).add(head.root_hash)
                wlog.seen.add(_ident(head))
            report.heads_written += len(valid)


def _ident(head: checkpoint.SignedHead) -> tuple[int, str, int, str]:
    return (head.tree_size, head.root_hash, head.issued_at_ms, head.signature)


def _leaf_hash(item: dict[str, Any]) -> bytes:
    return merkle.leaf_hash(merkle.leaf_input(str(item["tenant"]), str(item["run_id"]),
                                              str(item["event_id"]), str(item["event_hash"])))


def _key_items(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        items = [{"key_id": signing.key_id(signing.public_from_text(str(k["public_key"]))),
                  "public_key": str(k["public_key"])} for k in data["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a witness key file: {exc}") from None
    return items


def ledger_keyring(extra: list[str]) -> signing.Keyring:
    """Every ledger public key this machine knows: the key directory's (current and
    rotated out), AGENTLEDGER_LEDGER_PUBLIC_KEY, and ``--public-key``."""
    settings = connect.settings()
    directory = signing.key_dir(settings)
    ring = signing.local_keyring(directory) if directory.is_dir() else signing.Keyring()
    entries = [*settings.ledger_public_key.split(","), *extra]
    try:
        for public in signing.Keyring.parse(entries).keys.values():
            ring.add(public)
    except (ValueError, OSError) as exc:
        raise UserError(f"a public key could not be read: {exc}") from None
    return ring


def store_heads(query: Query) -> list[checkpoint.SignedHead]:
    return [checkpoint.SignedHead(str(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]),
                                  str(r[5])) for r in query(_HEADS_SQL, None)]


class HeadFollower:
    """The compacted ``agentledger.checkpoints`` topic, read from its start: the latest
    head per log (signatures are checked by the witness, not here)."""

    def __init__(self, bootstrap: str) -> None:
        from agentledger.core.follower import CompactedFollower
        from agentledger.schemas import topics

        owner = self
        self.heads: list[checkpoint.SignedHead] = []
        self.arrived = threading.Event()
        self._lock = threading.Lock()

        class _Follower(CompactedFollower):
            def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
                if not value:
                    return False
                try:
                    head = checkpoint.SignedHead.from_dict(json.loads(value))
                except (ValueError, KeyError, TypeError):
                    self.verifier.refuse("forged", (key or b"").decode("utf-8", "replace"))
                    return False
                with owner._lock:
                    owner.heads.append(head)
                owner.arrived.set()
                return True

        self.follower = _Follower(bootstrap, topics.CHECKPOINTS, purpose=signing.CHECKPOINT,
                                  trusted=None, name="witness")

    def take(self) -> list[checkpoint.SignedHead]:
        with self._lock:
            taken, self.heads = self.heads, []
        self.arrived.clear()
        return taken


@checkpoints_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="the witness directory (created; "
                                               "re-exporting appends only what is new)")],
    follow: Annotated[bool, typer.Option(
        "--follow", help="keep running: follow the compacted agentledger.checkpoints topic "
        "and append every new head (and its leaves) as it is signed")] = False,
    public_key: Annotated[list[str] | None, typer.Option(
        "--public-key", help="another trusted ledger public key (base64 or a .pub file); "
        "the key directory's keys are always included")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Copy the ledger's signed heads, their leaves and the public keys into DIR.

    Every head's signature is checked before it is written, and the leaves must recompute
    every head's root. Keep DIR outside the ledger's reach (docs/integrity.md, "The
    witness"); `agentledger verify --ledger --witness DIR` holds the store to it.
    Exit 1 if a head or a leaf did not check out (named on stderr).
    """
    witness = Witness(directory, ledger_keyring(public_key or []))
    total = Report()
    with connect.ledger() as ledger:
        def query(sql: str, params: dict[str, Any] | None) -> list[list[Any]]:
            rows: list[list[Any]] = ledger.query(sql, params, max_rows=PAGE).rows
            return rows

        def run(extra: list[checkpoint.SignedHead]) -> None:
            report = witness.absorb(store_heads(query) + extra, query)
            total.heads_written += report.heads_written
            total.leaves_written += report.leaves_written
            for problem in report.problems:
                if problem not in total.problems:
                    total.problems.append(problem)
                    err.print(f"[red]{problem}[/red]", highlight=False)
            if follow and (report.heads_written or report.leaves_written):
                err.print(f"witnessed {report.heads_written} heads, "
                          f"{report.leaves_written} leaves", highlight=False)

        run([])
        if follow:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            follower = HeadFollower(connect.bootstrap(connect.settings()))
            with follower.follower:
                try:
                    while not stop.is_set():
                        follower.arrived.wait(1.0)
                        heads = follower.take()
                        if heads:  # signed after their leaves were stored
                            run(heads)
                except KeyboardInterrupt:
                    pass
    result = {**total.as_dict(), "directory": str(directory),
              "logs": sorted(witness.logs), "key_ids": sorted(witness.keys)}
    if as_json:
        print_json(result)
    else:
        err.print(f"witness {directory}: {total.heads_written} heads and "
                  f"{total.leaves_written} leaves written ({len(witness.logs)} logs, "
                  f"keys {', '.join(sorted(witness.keys))})", highlight=False)
    if total.problems:
        raise typer.Exit(1)
