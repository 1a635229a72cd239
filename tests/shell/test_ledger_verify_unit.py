"""The pure parts of ``verify --ledger`` (issue 23): the level-by-level tree agrees with
core/merkle.py's RFC 9162 functions at every size and index, heads are held to their
signatures, and a difference between the store's and the witness's leaves is named."""

from __future__ import annotations

import hashlib

from agentledger.core import merkle, signing
from agentledger.core.merkle_levels import Levels
from agentledger.queries import ledger_verify as lv
from agentledger.queries import witness as wv


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(n)]


def test_levels_match_the_rfc_functions_for_every_size_index_and_pair() -> None:
    leaves = _leaves(37)
    levels = Levels(b"".join(leaves))
    assert levels.size == 37
    for size in range(0, 38):
        assert levels.root(size) == merkle.root(leaves[:size]), size
        for index in range(size):
            proof = levels.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(leaves, index, size)
            assert merkle.verify_inclusion(leaves[index], index, size, proof,
                                           levels.root(size))
        for old in range(0, size + 1):
            proof = levels.consistency_proof(old, size)
            assert proof == merkle.consistency_proof(leaves, old, size), (old, size)
            assert merkle.verify_consistency(old, size, levels.root(old), levels.root(size),
                                             proof)


def _head(key: signing.LedgerKey, size: int, root: bytes, source: str = "store") -> lv.Head:
    unsigned = lv.Head("agent.events/0", size, root.hex(), 1_700_000_000_000, key.key_id, "",
                       source)
    return lv.Head(unsigned.log_id, size, root.hex(), unsigned.issued_at_ms, key.key_id,
                   key.private.sign(unsigned.message()).hex(), source)


def test_check_log_holds_the_tree_to_signed_heads() -> None:
    key, other = signing.LedgerKey.generate(), signing.LedgerKey.generate()
    leaves = _leaves(10)
    store = lv.StoreLog("agent.events/0", b"".join(leaves), list(range(10)), [])
    good = [_head(key, 4, merkle.root(leaves[:4])), _head(key, 10, merkle.root(leaves))]
    result = lv.check_log(store, good, key.keyring())
    assert result["ok"] and result["heads_ok"] == 2 and result["uncovered"] == 0, result
    assert result["verdicts"] == {"ok": 2, "forged": 0, "short": 0, "mismatch": 0}

    forged = _head(other, 10, merkle.root(leaves))  # the latest head: its signature counts
    assert lv.check_log(store, [good[0], forged], key.keyring())["verdicts"]["forged"] == 1
    wrong = _head(other, 6, merkle.root(leaves[:5] + leaves[6:7]))  # forged and not matching
    named = lv.check_log(store, [*good, wrong], key.keyring())
    assert named["verdicts"]["forged"] == 1 and "window" not in named, named

    tampered = lv.StoreLog("agent.events/0", b"".join(leaves[:3] + leaves[4:]),
                           list(range(9)), [])
    bad = lv.check_log(tampered, good, key.keyring())
    assert not bad["ok"] and bad["window"] == {"lo": 0, "hi": 4, "last_good": 0,
                                               "first_bad": 4}, bad
    assert any("does not have" in p for p in bad["problems"]), bad["problems"]


def _leaf(i: int, run: str = "r1", h: str | None = None) -> dict[str, object]:
    return {"event_id": f"e{i}", "tenant": "acme", "run_id": run,
            "event_hash": h or hashlib.sha256(str(i).encode()).hexdigest()}


def test_name_difference_says_what_changed() -> None:
    witness = [_leaf(i) for i in range(6)]
    assert wv.name_difference("L", witness, witness, 0) is None
    deleted = wv.name_difference("L", witness[:2] + witness[3:], witness, 0)
    assert deleted and deleted["change"] == "deleted" and deleted["event_id"] == "e2"
    assert deleted["index"] == 2
    altered = wv.name_difference("L", [*witness[:4], _leaf(4, h="f" * 64), witness[5]],
                                 witness, 0)
    assert altered and altered["change"] == "altered" and "event_hash" in altered["detail"]
    inserted = wv.name_difference("L", [*witness[:3], _leaf(99, run="forged"), *witness[3:]],
                                  witness, 0)
    assert inserted and inserted["change"] == "inserted" and inserted["run_id"] == "forged"
    swapped = wv.name_difference("L", [witness[0], witness[2], witness[1], *witness[3:]],
                                 witness, 0)
    assert swapped and swapped["change"] == "reordered" and swapped["index"] == 1
    truncated = wv.name_difference("L", witness[2:4], witness, 2)
    assert truncated and truncated["change"] == "deleted" and truncated["index"] == 4
    assert "DELETED event e4" in wv.describe(truncated)
