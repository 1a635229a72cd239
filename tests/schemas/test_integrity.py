"""The hash chain detects each kind of tampering and names the first broken link."""

from __future__ import annotations

import copy

from agentledger.schemas.integrity import GENESIS, event_hash, sign, verify_chain


def chain(n: int = 5, key: bytes | None = None) -> list[dict]:
    events, prev = [], GENESIS
    for seq in range(n):
        ev = {"event_id": f"e{seq}", "seq": seq, "run_id": "r", "principal": "svc",
              "body": {"n": seq, "x": 0.1}, "prev_hash": prev}
        ev["hash"] = event_hash(ev, prev)
        ev["sig"] = sign(ev["hash"], key) if key else None
        prev = ev["hash"]
        events.append(ev)
    return events


def test_intact_chain_verifies():
    result = verify_chain(chain())
    assert result.ok and result.events == 5


def test_modified_event_is_named():
    events = chain()
    events[2]["body"]["n"] = 99
    result = verify_chain(events)
    assert not result.ok and result.broken_event_id == "e2" and "hash" in result.problem


def test_deleted_event_is_named():
    events = chain()
    del events[1]
    result = verify_chain(events)
    assert not result.ok and result.broken_event_id == "e2" and "seq" in result.problem


def test_inserted_event_is_named():
    events = chain()
    forged = copy.deepcopy(events[1])
    forged["event_id"] = "forged"
    events.insert(2, forged)
    result = verify_chain(events)
    assert not result.ok and result.broken_event_id == "forged"


def test_swapped_events_are_named():
    events = chain()
    events[1], events[2] = events[2], events[1]
    result = verify_chain(events)
    assert not result.ok and result.broken_event_id == "e2"


def test_signature_checked_with_principal_key():
    events = chain(key=b"k1")
    assert verify_chain(events, keys={"svc": b"k1"}).ok
    assert not verify_chain(events, keys={"svc": b"other"}).ok
