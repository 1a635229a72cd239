"""core/merkle.py against the RFC 6962/9162 reference vectors (the Certificate
Transparency test data, as published by transparency-dev/merkle) and against a naive
recursive transcription of the RFC for every index and size up to 64."""

from __future__ import annotations

import hashlib

import pytest

from agentledger.core import merkle

# -- reference vectors: RFC 6962 test leaves, their roots for sizes 1..8 ------------------
CT_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (index, size, path)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_LEAVES = [merkle.leaf_hash(d) for d in CT_INPUTS]


# -- a naive reference: the RFC's recursive definitions, transcribed literally ----------
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


N = 64
LEAVES = [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(N)]
ROOTS = [ref_mth(LEAVES[:n]) for n in range(N + 1)]


def test_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert merkle.root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_leaf_input_is_the_contracts_bytes() -> None:
    assert merkle.leaf_input("t1", "r1", "e1", "ab") == b"agentledger.leaf.v1\nt1\nr1\ne1\nab"


def test_roots_match_the_rfc_vectors() -> None:
    for n in range(len(CT_LEAVES) + 1):
        assert merkle.root(CT_LEAVES[:n]).hex() == CT_ROOTS[n], f"size {n}"
        cr = merkle.CompactRange()
        cr.extend(CT_LEAVES[:n])
        assert cr.root().hex() == CT_ROOTS[n], f"compact range, size {n}"


@pytest.mark.parametrize("index,size,path", CT_INCLUSION)
def test_inclusion_matches_the_rfc_vectors(index: int, size: int, path: list[str]) -> None:
    proof = merkle.inclusion_proof(CT_LEAVES, index, size)
    assert [p.hex() for p in proof] == path
    assert merkle.verify_inclusion(CT_LEAVES[index], index, size, proof,
                                   bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize("old,new,path", CT_CONSISTENCY)
def test_consistency_matches_the_rfc_vectors(old: int, new: int, path: list[str]) -> None:
    proof = merkle.consistency_proof(CT_LEAVES, old, new)
    assert [p.hex() for p in proof] == path
    assert merkle.verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]),
                                     bytes.fromhex(CT_ROOTS[new]), proof)


def test_compact_range_matches_every_root_and_round_trips() -> None:
    cr = merkle.CompactRange()
    assert cr.root() == ROOTS[0]
    for n in range(1, N + 1):
        cr.append(LEAVES[n - 1])
        assert cr.size == n and len(cr.hashes) == bin(n).count("1")
        assert cr.root() == ROOTS[n] == merkle.root(LEAVES[:n]), f"size {n}"
        again = merkle.CompactRange.from_dict(cr.to_dict())
        assert again == cr and again.root() == ROOTS[n]
    with pytest.raises(ValueError):
        merkle.CompactRange(3, [LEAVES[0]])


def test_every_inclusion_proof_up_to_64() -> None:
    for n in range(1, N + 1):
        for i in range(n):
            proof = merkle.inclusion_proof(LEAVES, i, n)
            assert proof == ref_path(i, LEAVES[:n]), f"path {i}/{n}"
            assert merkle.verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])
            # nothing else verifies: another leaf, index, size, root, or a mangled path
            assert not merkle.verify_inclusion(LEAVES[(i + 1) % N], i, n, proof, ROOTS[n])
            if n > 1:
                assert not merkle.verify_inclusion(LEAVES[i], (i + 1) % n, n, proof,
                                                   ROOTS[n])
                assert not merkle.verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n - 1])
                assert not merkle.verify_inclusion(LEAVES[i], i, n, proof[:-1], ROOTS[n])
                bad = list(proof)
                bad[-1] = bytes([bad[-1][0] ^ 1]) + bad[-1][1:]
                assert not merkle.verify_inclusion(LEAVES[i], i, n, bad, ROOTS[n])
            assert not merkle.verify_inclusion(LEAVES[i], i, n, [*proof, LEAVES[0]],
                                               ROOTS[n])
            assert not merkle.verify_inclusion(LEAVES[i], n, n, proof, ROOTS[n])


def test_every_consistency_proof_up_to_64() -> None:
    for n in range(0, N + 1):
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(LEAVES, m, n)
            want = [] if m in (0, n) else ref_subproof(m, LEAVES[:n], True)
            assert proof == want, f"proof {m}->{n}"
            assert merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], proof), f"{m}->{n}"
            if 0 < m < n:
                # a different old tree (one leaf altered), a truncated/extended/mangled
                # proof, or swapped sizes must all fail
                other = [*LEAVES[:m - 1], merkle.leaf_hash(b"forged")]
                assert not merkle.verify_consistency(m, n, ref_mth(other), ROOTS[n], proof)
                assert not merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n - 1], proof)
                assert not merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], proof[:-1])
                assert not merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n],
                                                     [*proof, LEAVES[0]])
                bad = list(proof)
                bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
                assert not merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], bad)
                assert not merkle.verify_consistency(n, m, ROOTS[n], ROOTS[m], proof)
    assert not merkle.verify_consistency(4, 4, ROOTS[4], ROOTS[5], [])
    assert not merkle.verify_consistency(0, 8, ROOTS[0], ROOTS[8], [LEAVES[0]])


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES, 0, N + 1)
    with pytest.raises(ValueError):
        merkle.consistency_proof(LEAVES, 6, 5)
