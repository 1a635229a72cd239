"""``schemas/canonical.py`` against two maintained RFC 8785 implementations (issue 23):
the ``rfc8785`` PyPI library (in process) and Node's npm ``canonicalize`` (one ``node``
run), on the published vectors and on hypothesis-generated JSON values and events. The
SDK now writes ``canon: "jcs"`` by default, so these bytes are what every auditor's
verifier must reproduce."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentledger.schemas.canonical import NotCanonicalizable, canonicalize
from agentledger.schemas.integrity import CANON_JCS, canonical_json
from agentledger.schemas.vectors import VECTORS
from tests.intake.test_otlp_intake import npm_install

DOCUMENT = json.loads(VECTORS.read_text())
SAFE = 2**53 - 1

LEAVES = (st.none() | st.booleans() | st.integers(-SAFE, SAFE)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=25)
EVENTS = st.fixed_dictionaries({
    "schema_version": st.just(1), "event_type": st.sampled_from(["tool.call", "model.call"]),
    "run_id": st.text(min_size=1, max_size=12), "seq": st.integers(0, 10_000),
    "prev_hash": st.text("0123456789abcdef", min_size=64, max_size=64),
    "canon": st.just(CANON_JCS), "body": st.dictionaries(st.text(max_size=10), JSON_VALUES,
                                                          max_size=6),
})
CHECKS = settings(max_examples=400, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))


def _stripped(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("hash", "sig")}


def test_rfc8785_agrees_on_the_published_vectors() -> None:
    for case in DOCUMENT["values"]:
        assert rfc8785.dumps(case["input"]) == canonicalize(case["input"]), case["canonical"]
    for case in DOCUMENT["events"]:
        assert rfc8785.dumps(_stripped(case["event"])).decode() == case["canonical"]


@CHECKS
@given(value=JSON_VALUES)
def test_rfc8785_agrees_on_generated_values(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@CHECKS
@given(event=EVENTS)
def test_rfc8785_agrees_on_generated_events(event: dict[str, Any]) -> None:
    assert canonical_json(event) == rfc8785.dumps(event)


@pytest.mark.parametrize("value", [2**53, -(2**53), float("nan"), float("inf")])
def test_both_refuse_what_jcs_cannot_hold(value: Any) -> None:
    with pytest.raises(NotCanonicalizable):
        canonicalize(value)
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(value)


NODE_CHECK = """
const fs = require('fs');
const canonicalize = require('canonicalize');
const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let failures = 0;
for (const c of cases) {
  if (canonicalize(c.input) !== c.canonical) {
    failures++; if (failures < 5) console.error(JSON.stringify(c));
  }
}
console.log(JSON.stringify({ checked: cases.length, failures }));
process.exit(failures ? 1 : 0);
"""


def test_node_canonicalize_agrees_on_generated_values(tmp_path: Path) -> None:
    cases: list[dict[str, Any]] = []

    @CHECKS
    @given(value=JSON_VALUES | EVENTS)
    def collect(value: Any) -> None:
        cases.append({"input": value, "canonical": canonicalize(value).decode()})

    collect()
    npm_install(tmp_path, "canonicalize@^2")
    # json.dumps writes each double's repr, which JSON.parse reads back as the same double
    (tmp_path / "cases.json").write_text(json.dumps(cases, ensure_ascii=False))
    (tmp_path / "check.js").write_text(NODE_CHECK)
    done = subprocess.run(["node", "check.js", "cases.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "checked": len(cases), "failures": 0}


@pytest.mark.parametrize("value, text", [
    (2.0**60, "1152921504606847000"), (4.963602620895786e16, "49636026208957860"),
    (-(2.0**53), "-9007199254740992"), (1e20, "100000000000000000000")])
def test_integral_doubles_beyond_2_53_use_shortest_digits(value: float, text: str) -> None:
    """Found by this cross-check: the exact integer (…6976) is not ECMAScript's form."""
    assert canonicalize(value).decode() == text == rfc8785.dumps(value).decode()
    assert canonicalize({"x": [value]}).decode() == '{"x":[' + text + "]}"
