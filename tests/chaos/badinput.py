"""Hostile messages for ``agent.events``: each one must be rejected, none may stop the sink.

Seeded and deterministic. Every kind is invalid by construction (a message that happened
to be a valid event would land instead of being rejected, and the accounting would be
off), so duplicate keys repeat a key with an invalid last value, and hostile bodies keep a
valid envelope around a body of the wrong shape.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import orjson

KINDS: list[str] = []
_MAKERS: dict[str, Callable[[random.Random], bytes]] = {}


def _kind(name: str) -> Callable[[Callable[[random.Random], bytes]], Callable]:
    def register(maker: Callable[[random.Random], bytes]) -> Callable:
        KINDS.append(name)
        _MAKERS[name] = maker
        return maker
    return register


def _envelope(rnd: random.Random, body: object, event_type: str = "tool.call") -> dict:
    return {"schema_version": 1,
            "event_id": f"0193a1b2-c3d4-7e5f-8a9b-{rnd.getrandbits(48):012x}",
            "event_type": event_type, "ts": "2026-11-24T12:00:00.000000Z",
            "trace_id": f"{rnd.getrandbits(128):032x}", "span_id": f"{rnd.getrandbits(64):016x}",
            "parent_span_id": None, "run_id": "0193a1b2-c3d4-7e5f-8a9b-0c0d0e0f1011", "seq": 0,
            "tenant": "acme", "workspace": "default", "agent": "fuzz", "agent_version": "1",
            "principal": "svc-fuzz", "on_behalf_of": None, "env": "prod",
            "prev_hash": "0" * 64, "hash": "f" * 64, "body": body}


@_kind("random_bytes")
def _random_bytes(rnd: random.Random) -> bytes:
    return rnd.randbytes(rnd.randint(1, 4096))


@_kind("deeply_nested")
def _deeply_nested(rnd: random.Random) -> bytes:
    depth = rnd.randint(1100, 20_000)
    return b"[" * depth + b"]" * depth


@_kind("huge_array")
def _huge_array(rnd: random.Random) -> bytes:
    return orjson.dumps({"event_type": "tool.call", "items": [0] * rnd.randint(10_000, 200_000)})


@_kind("huge_string")
def _huge_string(rnd: random.Random) -> bytes:
    return orjson.dumps(_envelope(rnd, {"tool": "x" * rnd.randint(100_000, 600_000)}))


@_kind("invalid_utf8")
def _invalid_utf8(rnd: random.Random) -> bytes:
    return b'{"event_type": "tool.call", "tool": "' + bytes([0xFF, 0xFE, 0xC3]) + b'"}'


@_kind("nan_infinity")
def _nan(rnd: random.Random) -> bytes:
    return b'{"event_type": "model.call", "cost_usd": ' + rnd.choice([b"NaN", b"Infinity",
                                                                      b"-Infinity"]) + b"}"


@_kind("duplicate_keys")
def _duplicate_keys(rnd: random.Random) -> bytes:
    good = orjson.dumps(_envelope(rnd, {"tool": "zendesk", "action": "read", "mode": "read",
                                        "args": {}, "args_hash": "0" * 64}))
    return good[:-1] + b', "event_type": 42}'  # the last value wins, and it is invalid


@_kind("ten_thousand_fields")
def _many_fields(rnd: random.Random) -> bytes:
    return orjson.dumps({f"f{i}": i for i in range(10_000)})


@_kind("hostile_body")
def _hostile_body(rnd: random.Random) -> bytes:
    body = rnd.choice([
        {"tool": {"$where": "1=1"}, "action": 7, "mode": "delete"},
        {"tool": "'; DROP TABLE events; --", "mode": "write", "args": None},
        {"tool": ["x"] * 1000},
        None,
    ])
    return orjson.dumps(_envelope(rnd, body))


@_kind("empty")
def _empty(rnd: random.Random) -> bytes:
    return b""


def bad_messages(count: int, seed: int = 0) -> Iterator[tuple[str, bytes, bytes]]:
    """``count`` (kind, key, value) triples, cycling through every kind."""
    rnd = random.Random(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        yield kind, rnd.randbytes(rnd.randint(0, 64)), _MAKERS[kind](rnd)
