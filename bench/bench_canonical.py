"""RFC 8785 canonicalization speed: ours (schemas/canonical.py) vs the ``rfc8785`` PyPI
library, beside the legacy form (orjson, sorted keys) as the raw baseline, on the same
events in one run. Issue 23 asks whether the library is fast enough to replace ours.

    .venv/bin/python bench/bench_canonical.py [--events 20000] [--json]

The events are the published test vectors' chained events plus SDK-shaped tool calls
(nested args, floats, unicode), each canonicalized without ``hash``/``sig`` as the chain
hashes it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
import rfc8785

from agentledger.schemas.canonical import canonicalize
from agentledger.schemas.vectors import VECTORS


def events(count: int) -> list[dict[str, Any]]:
    vectors = [{k: v for k, v in case["event"].items() if k not in ("hash", "sig")}
               for case in json.loads(VECTORS.read_text())["events"]]
    made = []
    for n in range(count):
        base = dict(vectors[n % len(vectors)])
        base["body"] = {"tool": "zendesk", "op": "update", "mode": "write",
                        "args": {"id": n, "note": f"ticket ünïcode {n}", "score": n / 7,
                                 "tags": ["a", "b", {"tiny": 1e-7 * n, "ok": True}]},
                        "latency_ms": 12.5 + n % 100, "cost_usd": 0.0001 * (n % 50)}
        made.append(base)
    return made


def rate(fn: Callable[[Any], bytes], items: list[dict[str, Any]]) -> float:
    """Events per second, best of three passes (the machine is shared)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="one JSON object, last line")
    args = parser.parse_args()
    items = events(args.events)
    assert all(canonicalize(e) == rfc8785.dumps(e) for e in items[:2000])
    found = {
        "events": len(items),
        "ours_events_per_s": round(rate(canonicalize, items)),
        "rfc8785_events_per_s": round(rate(rfc8785.dumps, items)),
        "legacy_orjson_events_per_s": round(
            rate(lambda e: orjson.dumps(e, option=orjson.OPT_SORT_KEYS), items)),
    }
    found["rfc8785_vs_ours"] = round(found["rfc8785_events_per_s"] / found["ours_events_per_s"], 3)
    if not args.json:
        for key, value in found.items():
            print(f"{key:28} {value}")
    print(json.dumps(found))


if __name__ == "__main__":
    main()
