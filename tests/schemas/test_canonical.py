"""The versioned canonical form behind ``hash``: RFC 8785 vectors, legacy ledgers still
verify, and an independent implementation (Node, npm ``canonicalize``) agrees."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pytest

from agentledger.schemas.canonical import NotCanonicalizable, canonicalize, canonicalize_slow
from agentledger.schemas.integrity import GENESIS, canonical_json, event_hash, verify_chain
from agentledger.schemas.vectors import VECTORS, generated
from tests.intake.test_otlp_intake import npm_install

DOCUMENT = json.loads(VECTORS.read_text())


def test_committed_vectors_match_the_generator():
    assert VECTORS.read_text() == generated(), "run: python -m agentledger.schemas.vectors"


@pytest.mark.parametrize("case", DOCUMENT["values"], ids=lambda c: c["canonical"][:30])
def test_values_canonicalize_as_the_vectors_say(case: dict):
    assert canonicalize(case["input"]).decode() == case["canonical"]


def test_vector_events_chain_and_verify():
    events = [case["event"] for case in DOCUMENT["events"]]
    assert verify_chain(events).ok
    for case in DOCUMENT["events"]:
        assert canonical_json(case["event"]).decode() == case["canonical"]
    # integral floats and exponents read back from JSON text hash the same in JCS
    reparsed = [orjson.loads(orjson.dumps(e)) for e in events]
    assert verify_chain(reparsed).ok


def test_legacy_events_without_canon_still_verify_and_canon_cannot_be_swapped():
    legacy = {"schema_version": 1, "seq": 0, "run_id": "r", "event_id": "e", "prev_hash": GENESIS,
              "body": {"cost_usd": 1.0}}
    legacy["hash"] = event_hash(legacy, GENESIS)
    assert b'"cost_usd":1.0' in canonical_json(legacy)  # the old form, unchanged
    assert verify_chain([legacy]).ok
    upgraded = {**legacy, "canon": "jcs"}  # claiming another form breaks the hash
    assert not verify_chain([upgraded]).ok
    unknown = {**legacy, "canon": "c14n-99"}
    result = verify_chain([unknown])
    assert not result.ok and "unknown canonical form" in (result.problem or "")


def test_fast_path_equals_the_general_writer():
    import random

    rng = random.Random(7)
    floats = [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 25) for _ in range(3000)]
    floats += [float(rng.randint(-10**6, 10**6)) for _ in range(200)] + [1e-4, 9.999e-5]
    values = [case["input"] for case in DOCUMENT["values"]]
    values += [case["event"] for case in DOCUMENT["events"]]
    values += [{"x": f, "list": [f, {"y": f}]} for f in floats]
    values += [{"\U0001f600": 1, "\ufb33": [1.0, 2**53 - 1]}, ("t", 1.0)]
    text = "".join(chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0x80, 0xffff),
                                    rng.randint(0x10000, 0x10ffff)])) for _ in range(4000))
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    values += [{text[i:i + 7]: text[i + 7:i + 20], "n": i} for i in range(0, 3900, 20)]
    values += [{"big": 2**53 - 1, "x": [1.0, -0.0, 1e16, 1e20, 1e-7, 0.1]}, 1.0, 5]
    for value in values:
        slow = canonicalize_slow(value)
        assert canonicalize(value) == slow, value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53, {1: "x"}, b"bytes"])
def test_values_jcs_cannot_represent_are_refused(value: object):
    with pytest.raises(NotCanonicalizable):
        canonicalize(value)


NODE_CHECK = """
const fs = require('fs');
const crypto = require('crypto');
const canonicalize = require('canonicalize');
const doc = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let failures = 0, checked = 0;
for (const v of doc.values) {
  checked++;
  if (canonicalize(v.input) !== v.canonical) { failures++; console.error('value', v.canonical); }
}
let prev = '0'.repeat(64);
for (const e of doc.events) {
  checked++;
  const { hash, sig, ...rest } = e.event;
  const text = canonicalize(rest);
  const digest = crypto.createHash('sha256').update(text + prev, 'utf8').digest('hex');
  if (text !== e.canonical || digest !== e.hash || e.prev_hash !== prev || hash !== digest) {
    failures++; console.error('event', e.event.seq);
  }
  prev = digest;
}
console.log(JSON.stringify({ checked, failures }));
process.exit(failures ? 1 : 0);
"""


def test_node_canonicalize_agrees_with_the_published_vectors(tmp_path: Path):
    npm_install(tmp_path, "canonicalize@^2")
    (tmp_path / "check.js").write_text(NODE_CHECK)
    done = subprocess.run(["node", "check.js", str(VECTORS)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"checked": len(DOCUMENT["values"]) + len(DOCUMENT["events"]),
                      "failures": 0}
