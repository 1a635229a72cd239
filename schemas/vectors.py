"""Test vectors of the ``jcs`` canonical form: ``python -m agentledger.schemas.vectors`` writes
``schemas/test_vectors/canonical.json``.

A producer in any language checks itself against the file: for each ``values`` entry its
canonicalisation of ``input`` must equal ``canonical``; for each ``events`` entry, its
canonicalisation of the event without ``hash`` and ``sig`` must equal ``canonical`` and
``sha256(canonical + prev_hash)`` (hex, lowercase) must equal ``hash``. The events form
one run's chain. A test checks the committed file matches this generator, and a Node
script (``canonicalize`` from npm) checks the file independently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agentledger.schemas.canonical import canonicalize
from agentledger.schemas.integrity import CANON_JCS, GENESIS, canonical_json, event_hash

VECTORS = Path(__file__).parent / "test_vectors" / "canonical.json"

VALUES: list[Any] = [
    1.0, -0.0, 1e21, 1e20, 1e-7, 1.5e-7, 1e-6, 0.1 + 0.2, 123.456, 5e-324,
    1.7976931348623157e308, 9007199254740991, -9007199254740991, 333333333.3333333,
    "\u20ac$\u000f\nA'B\"\\\\\"/", "\u007f\u2028\u00e9\U0001f600", True, None, [],
    {"b": 1, "a": [2, {"d": 3, "c": 4}]},
    {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7},
]

_RUN = "0123456789abcdef0123456789abcdef"


def _events() -> list[dict[str, Any]]:
    base = {"schema_version": 1, "trace_id": _RUN, "run_id": _RUN, "tenant": "acme",
            "workspace": "default", "agent": "triage", "agent_version": "2.0.0",
            "principal": "support-bot", "on_behalf_of": None, "env": "prod",
            "canon": CANON_JCS, "origin": "otlp_http"}
    bodies = [
        ("run.started", {"workflow": "triage", "inputs_hash": "0" * 63 + "1",
                         "input_ref": "session:s-\u00e9\U0001f600", "prompt_template": "default",
                         "prompt_version": "1", "model_config": {"temperature": 1.0},
                         "policy_version": "1",
                         "budget": {"max_cost_usd": 2.0, "max_tool_calls": None}}),
        ("model.call", {"provider": "openai", "model": "gpt-4o-mini",
                        "model_version": "gpt-4o-mini", "role": "chat", "tokens_in": 1200,
                        "tokens_out": 300, "cached_tokens": 0, "cost_usd": 0.00036,
                        "price_version": "2026-11-01", "latency_ms": 812.5, "status": "ok"}),
        ("tool.call", {"tool": "crm", "action": "execute", "mode": "write",
                       "tool_version": "unversioned", "schema_hash": "a" * 64,
                       "args": {"note": "line1\nline2\t\"quoted\"\u0001", "amount": 1e-7,
                                "big": 1e21, "\u00e9": 1}, "args_hash": "b" * 64,
                       "idempotency_key": None}),
        ("run.finished", {"outcome": "success", "workflow": "triage", "error": None,
                          "totals": {"cost_usd": 0.00036, "tokens_in": 1200, "tokens_out": 300,
                                     "model_calls": 1, "tool_calls": 1, "duration_ms": 1000.0,
                                     "cost_by_model": {"openai/gpt-4o-mini": 0.00036}}}),
    ]
    events = []
    prev = GENESIS
    for seq, (event_type, body) in enumerate(bodies):
        event: dict[str, Any] = {**base, "event_id": f"0192f000-0000-7000-8000-00000000000{seq}",
                 "event_type": event_type, "ts": f"2026-11-24T12:00:0{seq}.000000Z",
                 "span_id": f"{seq + 1:016x}", "parent_span_id": None if seq == 0 else
                 f"{1:016x}", "seq": seq, "prev_hash": prev, "body": body}
        event["hash"] = event_hash(event, prev)
        event["sig"] = None
        events.append({"event": event, "prev_hash": prev,
                       "canonical": canonical_json(event).decode(), "hash": event["hash"]})
        prev = event["hash"]
    return events


def generated() -> str:
    document = {
        "canon": CANON_JCS,
        "spec": "RFC 8785 JSON Canonicalization Scheme; hash = sha256(canonical(event minus "
                "'hash' and 'sig') + prev_hash as ASCII), lowercase hex",
        "values": [{"input": v, "canonical": canonicalize(v).decode()} for v in VALUES],
        "events": _events(),
    }
    return json.dumps(document, indent=1, ensure_ascii=True) + "\n"


def main() -> int:
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(generated())
    print(f"wrote {VECTORS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
