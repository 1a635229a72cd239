"""A Merkle tree held whole, level by level, for verifiers that recompute a log.

:class:`agentledger.core.merkle.CompactRange` is what an appender keeps (the frontier);
a verifier that rebuilt every leaf wants the opposite: every head's root, inclusion and
consistency proof from one pass. :class:`Levels` hashes each level in one tight loop
(about n interior hashes for n leaves) and keeps it as one ``bytes``; every range the
RFC 9162 algorithms visit starts aligned, so any of their subtree hashes is a fold of
O(log n) stored nodes. Results equal :mod:`agentledger.core.merkle`'s (held to them for
every size and index up to 37 in tests/shell/test_ledger_verify_unit.py).
"""

from __future__ import annotations

import hashlib
from typing import Final

from agentledger.core import merkle

HASH: Final = 32


class Levels:
    """Every aligned perfect subtree of a log's tree: level 0 the leaf hashes, level k the
    roots of the subtrees of 2**k leaves starting at multiples of 2**k, each level one
    ``bytes`` of 32-byte hashes. Any MTH the RFC's proofs need is a fold of O(log n) of
    them, since its ranges start aligned."""

    def __init__(self, leaves: bytes):
        if len(leaves) % HASH:
            raise ValueError("leaf hashes are 32 bytes each")
        self.size = len(leaves) // HASH
        self.levels = [leaves]
        sha = hashlib.sha256
        current = leaves
        while len(current) >= 2 * HASH:
            end = len(current) // (2 * HASH) * 2 * HASH
            current = b"".join([sha(b"\x01" + current[i:i + 2 * HASH]).digest()
                                for i in range(0, end, 2 * HASH)])
            self.levels.append(current)

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index * HASH:(index + 1) * HASH]

    def range_root(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``[lo, hi)``; ``lo`` must be aligned to the largest power of two
        not above ``hi - lo`` (every range the RFC's recursion visits is)."""
        if hi <= lo:
            return merkle.EMPTY_ROOT
        nodes = []
        pos, n = lo, hi - lo
        for k in range(n.bit_length() - 1, -1, -1):
            if n >> k & 1:
                j = pos >> k
                nodes.append(self.levels[k][j * HASH:(j + 1) * HASH])
                pos += 1 << k
        h = nodes[-1]
        for left in reversed(nodes[:-1]):
            h = merkle.node_hash(left, h)
        return h

    def root(self, size: int) -> bytes:
        return self.range_root(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 §2.1.3.1), as :func:`merkle.inclusion_proof`."""
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} outside a tree of size {size}")
        proof: list[bytes] = []
        lo, hi, m = 0, size, index
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if m < k:
                proof.append(self.range_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.range_root(lo, lo + k))
                lo, m = lo + k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """PROOF(old, D[new]) (RFC 9162 §2.1.4.1), as :func:`merkle.consistency_proof`."""
        if not 0 <= old <= new <= self.size:
            raise ValueError(f"sizes {old}, {new} outside a tree of size {self.size}")
        if old in (0, new):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new, old, True
        while True:
            n = hi - lo
            if m == n:
                if not complete:
                    proof.append(self.range_root(lo, hi))
                break
            k = 1 << ((n - 1).bit_length() - 1)
            if m <= k:
                proof.append(self.range_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.range_root(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        proof.reverse()
        return proof
