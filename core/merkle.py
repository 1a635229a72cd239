"""Merkle trees of the event log, RFC 9162 (Certificate Transparency v2) §2.1 hashing.

Why this shape: a transparency log's tree lets a witness holding only signed heads (size,
root) prove later that nothing already covered was deleted, rewritten, reordered or
back-dated (a *consistency proof* between two heads), and lets anyone prove one event is
in a head with O(log n) hashes (an *inclusion proof*). Leaf and interior hashes are
domain-separated (``0x00`` / ``0x01`` prefixes) so a leaf can never pass as a node.

- :func:`leaf_input` is the ledger's leaf: tenant, run, event id and the event's chain
  hash. The run's chain makes the last event's leaf cover the whole run.
- :class:`CompactRange` is the append-only frontier the sink keeps per log: one hash per
  set bit of the size (at most 64), enough to append and to compute the root without
  reading any earlier leaf; it persists as a small dict.
- :func:`inclusion_proof` / :func:`verify_inclusion` and :func:`consistency_proof` /
  :func:`verify_consistency` are the RFC's algorithms (§2.1.3, §2.1.4), held to the
  RFC 6962 / certificate-transparency reference vectors in tests/core/test_merkle.py.

Hand-written rather than a library: the few maintained Python packages either use other
leaf/node prefixes or have no compact range; the whole algorithm is ~150 lines and is
checked against a naive recursive reference for every index and size up to 64.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
LEAF_VERSION: Final = "agentledger.leaf.v1"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

LEAF_SQL: Final = ("SHA256(concat({leaf_prefix:String}, tenant, '\\n', run_id, '\\n', "
                   "toString(event_id), '\\n', hash))")
""":func:`leaf_hash` of :func:`leaf_input` as a ClickHouse expression over an ``events``
row (raw 32 bytes), for the engine to hash leaves where they are stored; bind
``leaf_prefix`` to :data:`LEAF_SQL_PREFIX`."""
LEAF_SQL_PREFIX: Final = (LEAF_PREFIX + LEAF_VERSION.encode() + b"\n").decode()


def leaf_input(tenant: str, run_id: str, event_id: str, event_hash: str) -> bytes:
    """The bytes one stored event contributes: a versioned, newline-separated record.
    (None of the fields can hold a newline: ids are validated, the hash is hex.)"""
    return (f"{LEAF_VERSION}\n{tenant}\n{run_id}\n{event_id}\n{event_hash}").encode()


def leaf_hash(data: bytes) -> bytes:
    """MTH of a one-leaf tree: ``sha256(0x00 || data)``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: ``sha256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The right frontier of an append-only tree: the roots of its perfect subtrees,
    largest (leftmost) first, one per set bit of :attr:`size`.

    ``append`` is amortised O(1) hashes, ``root`` O(log n); nothing else is kept, so the
    sink can persist it with each flush (``to_dict``) and resume after a crash.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} holds {bin(size).count('1')} "
                             f"hashes, not {len(hashes)}")
        self.size = size
        self.hashes: list[bytes] = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (already :func:`leaf_hash`-ed)."""
        h = leaf
        n = self.size
        while n & 1:  # each trailing set bit is a perfect subtree of the same height
            h = node_hash(self.hashes.pop(), h)
            n >>= 1
        self.hashes.append(h)
        self.size += 1

    def append_subtree(self, root: bytes, height: int) -> None:
        """Add ``2**height`` leaves at once by the root of their perfect subtree. Only
        valid where that subtree is aligned (the size a multiple of ``2**height``), which
        :func:`aligned_pieces` guarantees."""
        if self.size % (1 << height):
            raise ValueError(f"a subtree of height {height} is not aligned at {self.size}")
        h = root
        n = self.size >> height
        while n & 1:
            h = node_hash(self.hashes.pop(), h)
            n >>= 1
        self.hashes.append(h)
        self.size += 1 << height

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves appended so far (``sha256(b"")`` when empty)."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "hashes": [h.hex() for h in self.hashes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompactRange:
        return cls(int(data["size"]), [bytes.fromhex(h) for h in data["hashes"]])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompactRange) and (self.size, self.hashes) == \
            (other.size, other.hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self.size}, root={self.root().hex()[:16]}…)"


def aligned_pieces(size: int, count: int) -> list[tuple[int, int]]:
    """How ``count`` leaves appended to a tree of ``size`` split into aligned perfect
    subtrees, as (first leaf, relative to ``size``; height), left to right: at most about
    2·log2(count) pieces, whose roots :meth:`CompactRange.append_subtree` takes in
    order. Why: whoever holds the leaves (the store's engine) can hash each piece, so the
    appender folds O(log n) hashes per batch instead of one per leaf."""
    pieces: list[tuple[int, int]] = []
    position, end = size, size + count
    while position < end:
        height = (end - position).bit_length() - 1
        if position:
            height = min(height, (position & -position).bit_length() - 1)
        pieces.append((position - size, height))
        position += 1 << height
    return pieces


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of ``leaves[lo:hi]`` (iterative, via a compact range)."""
    if hi <= lo:
        return EMPTY_ROOT
    cr = CompactRange()
    for i in range(lo, hi):
        cr.append(leaves[i])
    return cr.root()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes; the empty tree's root is ``sha256(b"")``."""
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _check_size(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size < 0 or size > len(leaf_hashes):
        raise ValueError(f"tree size {size} outside 0..{len(leaf_hashes)}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1 over the first ``size`` leaves."""
    _check_size(leaf_hashes, size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside a tree of size {size}")
    proof: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:  # walk down; siblings collect bottom-up, so reverse at the end
        k = _split(hi - lo)
        if m < k:
            proof.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaf_hashes, lo, lo + k))
            lo, m = lo + k, m - k
    proof.reverse()
    return proof


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: is ``leaf_hash`` at ``index`` of the tree of ``size`` with
    ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int,
                      new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1. Empty when ``old_size`` is 0
    or equal to ``new_size`` (nothing to prove beyond comparing roots)."""
    _check_size(leaf_hashes, new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} outside 0..{new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:  # SUBPROOF(m, D[lo:hi], complete), iteratively
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(_mth(leaf_hashes, lo, hi))
            break
        k = _split(n)
        if m <= k:
            proof.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaf_hashes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof.reverse()
    return proof


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``old_size`` with ``old_root`` a prefix of the
    tree of ``new_size`` with ``new_root``? (Size 0 is a prefix of anything; equal sizes
    need equal roots and an empty proof.)"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
