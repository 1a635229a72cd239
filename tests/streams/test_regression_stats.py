"""The regression comparison's pure statistics: McNemar's exact test on paired outcomes,
the cost check, and the verdicts (agentledger.streams.regression)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agentledger.streams.regression import (
    CaseResult,
    CompareConfig,
    SetError,
    compare,
    mcnemar_exact,
    parse_set,
    set_id_of,
)


def make_set(n: int) -> str:
    cases = [{"case_id": str(i), "run_id": f"r{i}", "agent": "bot", "agent_version": "1",
              "input_ref": f"t:{i}", "inputs_hash": f"{i:064x}", "outcome": "success",
              "tools": [], "cost_usd": 0.01} for i in range(n)]
    return json.dumps({"format": "agentledger.regression_set/1", "set_id": set_id_of(cases),
                       "tenant": "acme", "workflow": "w",
                       "created_at": datetime.now(UTC).isoformat(), "cases": cases})


def outcomes(n: int, failing: set[int], cost: float = 0.01) -> dict[str, CaseResult]:
    return {str(i): CaseResult("failure" if i in failing else "success", cost)
            for i in range(n)}


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(0.5 ** 5)
    # 8 broken, 2 fixed: P(X >= 8 | Bin(10, 1/2)) = 56/1024
    assert mcnemar_exact(8, 2) == pytest.approx(56 / 1024)
    assert mcnemar_exact(2, 8) > 0.9


def test_verdicts():
    regression_set = parse_set(make_set(200))
    base = outcomes(200, {1, 2, 3})
    assert compare(regression_set, "b", base, "c", outcomes(200, {1, 2, 3})).verdict == "pass"
    broken = compare(regression_set, "b", base, "c", outcomes(200, set(range(0, 200, 10))))
    assert broken.verdict == "fail" and broken.exit_code == 2
    assert broken.broken == 20 - 0 and broken.fixed == 3  # cases 1, 2, 3 now succeed
    # 4 broken of 200 is 2 points: inside max_drop 3 points, whatever its p-value
    small = compare(regression_set, "b", base, "c", outcomes(200, {1, 2, 3, 4, 5, 6, 7}))
    assert small.verdict == "pass" and small.broken == 4
    pricier = compare(regression_set, "b", base, "c", outcomes(200, {1, 2, 3}, cost=0.02))
    assert pricier.verdict == "marginal" and pricier.cost_ratio == pytest.approx(2.0)
    few = compare(regression_set, "b", outcomes(10, set()), "c", outcomes(10, set()))
    assert few.verdict == "insufficient_data" and few.exit_code == 3
    assert compare(regression_set, "b", base, "c", base,
                   CompareConfig(min_cases=500)).verdict == "insufficient_data"


def test_a_set_edited_by_hand_is_refused():
    data = json.loads(make_set(3))
    data["cases"][0]["inputs_hash"] = "f" * 64
    with pytest.raises(SetError, match="set_id does not match"):
        parse_set(json.dumps(data))
    with pytest.raises(SetError, match="not a regression set"):
        parse_set("{}")
