"""The release gate's pure statistics and verdicts (streams/release_gate.py, gate_stats.py).

Known answers where the literature has them (Newcombe's worked example, textbook Holm),
then the verdict rules on seeded synthetic cohorts with known effects.
"""

from __future__ import annotations

import random

import pytest

from agentledger.streams import gate_stats
from agentledger.streams.release_gate import (
    EXIT_CODES,
    Arm,
    CohortError,
    GateConfigError,
    default_config,
    evaluate,
    parse_cohort,
    parse_config,
)


def arm(n: int, success: float, *, seed: int, tool_error: float = 0.02, cost: float = 0.01,
        latency: float = 1000.0, blocked: float = 0.03, rollback: float = 0.01) -> Arm:
    """A synthetic cohort: ``n`` runs, two tool calls each, lognormal cost and latency."""
    rng = random.Random(seed)
    outcomes = [rng.random() < success for _ in range(n)]
    costs = [cost * rng.lognormvariate(0, 0.5) for _ in range(n)]
    calls = 2 * n
    return Arm(runs=n, successes=sum(outcomes), cost_usd=sum(costs), tool_results=calls,
               tool_errors=sum(rng.random() < tool_error for _ in range(calls)),
               blocked_runs=sum(rng.random() < blocked for _ in range(n)),
               rollback_runs=sum(rng.random() < rollback for _ in range(n)),
               success_costs=[c for c, ok in zip(costs, outcomes, strict=True) if ok],
               durations_ms=[latency * rng.lognormvariate(0, 0.6) for _ in range(n)])


def by_name(result):
    return {m.name: m for m in result.metrics}


# -- statistics ---------------------------------------------------------------------------


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, method 10: 56/70 vs 48/80 → 0.0524 .. 0.3339
    test = gate_stats.rate_test(48, 80, 56, 70, bad_is_k=False, confidence=0.95)
    assert test.difference == pytest.approx(56 / 70 - 48 / 80)
    assert test.ci_low == pytest.approx(0.0524, abs=5e-4)
    assert test.ci_high == pytest.approx(0.3339, abs=5e-4)
    # the candidate succeeds more: no evidence that it is worse
    assert test.p_value > 0.9


def test_rate_test_p_value_is_fishers_one_sided():
    from scipy.stats import fisher_exact

    test = gate_stats.rate_test(900, 1000, 850, 1000, bad_is_k=False, confidence=0.95)
    expected = fisher_exact([[150, 850], [100, 900]], alternative="greater").pvalue
    assert test.p_value == pytest.approx(expected)
    assert test.p_value < 0.001 and test.ci_high < 0
    errors = gate_stats.rate_test(10, 1000, 40, 1000, bad_is_k=True, confidence=0.95)
    assert errors.p_value < 0.001 and errors.ci_low > 0


def test_rate_interval_stays_inside_the_unit_range_at_the_edges():
    for k_b, k_c in ((0, 0), (10, 10), (0, 10), (10, 0)):
        test = gate_stats.rate_test(k_b, 10, k_c, 10, bad_is_k=True, confidence=0.95)
        assert -1 <= test.ci_low <= test.difference <= test.ci_high <= 1
    with pytest.raises(ValueError):
        gate_stats.rate_test(0, 0, 1, 1, bad_is_k=True, confidence=0.95)


def test_hodges_lehmann_recovers_a_known_shift():
    rng = random.Random(3)
    base = [rng.lognormvariate(3, 0.5) for _ in range(400)]
    cand = [v + 7.0 for v in (rng.lognormvariate(3, 0.5) for _ in range(400))]
    test = gate_stats.shift_test(base, cand, confidence=0.95)
    assert test.ci_low < 7.0 < test.ci_high
    assert test.ci_low < test.shift < test.ci_high
    assert test.p_value < 1e-6
    same = gate_stats.shift_test(base, base, confidence=0.95)
    assert same.shift == 0 and same.ci_low <= 0 <= same.ci_high and same.p_value > 0.4


def test_shift_test_subsamples_large_arms_and_handles_ties():
    big = [float(i % 97) for i in range(5_000)]
    test = gate_stats.shift_test(big, [v + 1 for v in big], confidence=0.95)
    assert test.ci_low <= 1.0 <= test.ci_high
    tied = gate_stats.shift_test([1.0] * 20, [1.0] * 20, confidence=0.95)
    assert tied.p_value == 1.0 and tied.shift == 0.0


def test_holm_with_equal_weights_is_the_textbook_procedure():
    adjusted = gate_stats.holm({"a": 0.01, "b": 0.04, "c": 0.03}, {"a": 1, "b": 1, "c": 1})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert gate_stats.holm({"a": 0.5}, {"a": 0}) == {}


def test_weighted_holm_gives_heavier_metrics_more_alpha():
    p = {"heavy": 0.02, "light": 0.02}
    adjusted = gate_stats.holm(p, {"heavy": 3, "light": 1})
    assert adjusted["heavy"] == pytest.approx(0.02 * 4 / 3)
    assert adjusted["light"] == pytest.approx(0.02 * 4 / 3)  # monotone: never below a step
    assert gate_stats.holm({"a": 0.9, "b": 0.001}, {"a": 1, "b": 1})["a"] == 0.9


# -- verdicts ------------------------------------------------------------------------------


def test_an_identical_candidate_passes_and_exits_zero():
    result = evaluate(arm(1000, 0.9, seed=1), arm(1000, 0.9, seed=2))
    assert result.verdict == "pass" and result.exit_code == 0 and result.reasons == []
    assert result.score == 100
    assert all(m.status == "pass" for m in result.metrics)
    success = by_name(result)["success_rate"]
    assert success.ci_low < success.difference < success.ci_high


def test_a_five_point_success_drop_fails_and_names_the_metric():
    result = evaluate(arm(1000, 0.9, seed=1), arm(1000, 0.85, seed=2))
    assert result.verdict == "fail" and result.exit_code == 2
    assert by_name(result)["success_rate"].status == "worse"
    assert any(r.startswith("success_rate worse") for r in result.reasons)


def test_a_pricier_candidate_is_marginal_on_cost_alone():
    result = evaluate(arm(1000, 0.9, seed=1), arm(1000, 0.9, seed=2, cost=0.013))
    metrics = by_name(result)
    assert metrics["cost_per_success"].status == "worse"
    assert metrics["cost_per_success"].effect == pytest.approx(0.3, abs=0.1)
    assert result.verdict == "marginal" and result.exit_code == 1
    assert result.reasons[0].startswith("cost_per_success worse")


def test_several_non_critical_regressions_fail_on_the_score():
    bad = arm(1000, 0.9, seed=2, cost=0.013, tool_error=0.06, latency=1500)
    result = evaluate(arm(1000, 0.9, seed=1), bad)
    worse = {m.name for m in result.metrics if m.status == "worse"}
    assert {"cost_per_success", "tool_error_rate", "p95_latency"} <= worse
    assert result.verdict == "fail" and result.score is not None and result.score < 75


def test_a_better_candidate_passes():
    better = arm(1000, 0.95, seed=2, cost=0.008, tool_error=0.005, latency=700)
    assert evaluate(arm(1000, 0.9, seed=1), better).verdict == "pass"


def test_ten_runs_are_insufficient_data_never_a_pass_even_when_far_worse():
    for candidate in (arm(10, 0.9, seed=2), arm(10, 0.1, seed=2)):
        result = evaluate(arm(1000, 0.9, seed=1), candidate)
        assert result.verdict == "insufficient_data" and result.exit_code == 3
        assert "candidate has 10 finished runs" in result.reasons[0]


def test_a_critical_metric_without_data_is_insufficient():
    empty = Arm(runs=0, successes=0, cost_usd=0, tool_results=0, tool_errors=0,
                blocked_runs=0, rollback_runs=0)
    result = evaluate(empty, empty)
    assert result.verdict == "insufficient_data" and result.score is None
    assert all(m.status == "insufficient" for m in result.metrics)


def test_a_metric_without_data_in_one_arm_is_left_out_of_the_score():
    base = arm(200, 0.9, seed=1)
    cand = arm(200, 0.9, seed=2)
    no_tools = Arm(**{**cand.__dict__, "tool_results": 0, "tool_errors": 0})
    result = evaluate(base, no_tools)
    assert by_name(result)["tool_error_rate"].status == "insufficient"
    assert result.verdict == "pass"


def test_tolerance_keeps_a_significant_but_small_difference_from_failing():
    config = parse_config(_yaml(success_tolerance=0.10))
    result = evaluate(arm(5000, 0.9, seed=1), arm(5000, 0.87, seed=2), config)
    success = by_name(result)["success_rate"]
    assert success.p_adjusted is not None and success.p_adjusted < 0.05
    assert success.status == "pass" and result.verdict == "pass"


def test_a_zero_weight_metric_is_reported_but_not_gated():
    config = parse_config(_yaml(latency_weight=0))
    result = evaluate(arm(1000, 0.9, seed=1), arm(1000, 0.9, seed=2, latency=3000), config)
    latency = by_name(result)["p95_latency"]
    assert latency.p_value is not None and latency.p_value < 1e-6
    assert latency.p_adjusted is None and latency.status == "pass"
    assert result.verdict == "pass"


def test_result_is_plain_data_with_exit_codes_for_ci():
    data = evaluate(arm(200, 0.9, seed=1), arm(200, 0.9, seed=2)).as_dict()
    assert set(data) >= {"verdict", "exit_code", "score", "reasons", "metrics",
                         "config_version"}
    assert EXIT_CODES == {"pass": 0, "marginal": 1, "fail": 2, "insufficient_data": 3}
    assert {m["name"] for m in data["metrics"]} == {
        "success_rate", "cost_per_success", "tool_error_rate", "policy_block_rate",
        "rollback_rate", "p95_latency"}


# -- config and cohorts ------------------------------------------------------------------


def _yaml(success_tolerance: float = 0.02, latency_weight: float = 5) -> str:
    return f"""
version: test-1
alpha: 0.05
min_runs: 100
pass_score: 95
marginal_score: 75
metrics:
  success_rate: {{tolerance: {success_tolerance}, weight: 40, critical: true}}
  cost_per_success: {{tolerance: 0.1, weight: 20}}
  p95_latency: {{tolerance: 0.1, weight: {latency_weight}}}
"""


def test_the_packaged_default_loads():
    config = default_config()
    assert config.version and set(config.metrics) == {
        "success_rate", "cost_per_success", "tool_error_rate", "policy_block_rate",
        "rollback_rate", "p95_latency"}
    assert config.metrics["success_rate"].critical


@pytest.mark.parametrize(("text", "named"), [
    ("alpha: [", "not YAML"),
    ("- 1\n- 2", "top level"),
    (_yaml().replace("alpha: 0.05", "alpha: 2"), "alpha"),
    (_yaml().replace("p95_latency", "p99_latency"), "unknown metric(s) p99_latency"),
    (_yaml().replace("marginal_score: 75", "marginal_score: 99"), "marginal_score"),
    (_yaml() + "colour: blue\n", "colour"),
    ("[" * 5000, "not YAML"),
])
def test_a_bad_config_names_the_problem(text, named):
    with pytest.raises(GateConfigError, match=r"^gate\.yaml: ") as caught:
        parse_config(text)
    assert named in str(caught.value)


def test_cohorts_parse_and_refuse_with_a_reason():
    assert parse_cohort("agent_version=1.4.2") == {"agent_version": "1.4.2"}
    assert parse_cohort(" model = gpt-4o , prompt_version=7") == {
        "model": "gpt-4o", "prompt_version": "7"}
    for text, reason in (("", "key=value"), ("agent_version", "not key=value"),
                         ("agent=crm", "cannot select runs by 'agent'"),
                         ("model=a,model=b", "given twice"),
                         ("model=" + "x" * 129, "longer than 128")):
        with pytest.raises(CohortError, match=reason):
            parse_cohort(text)


def _counts(n: int, successes: int) -> Arm:
    return Arm(runs=n, successes=successes, cost_usd=0.0, tool_results=0, tool_errors=0,
               blocked_runs=0, rollback_runs=0)


def test_a_drop_of_exactly_the_tolerance_is_not_worse():
    # 0.9 - 0.87 is 0.030000000000000027 in binary: it must not exceed a 3-point tolerance
    config = parse_config(_yaml(success_tolerance=0.03))
    at = by_name(evaluate(_counts(1000, 900), _counts(1000, 870), config))["success_rate"]
    assert at.p_adjusted is not None and at.p_adjusted < 0.05 and at.status == "pass"
    past = by_name(evaluate(_counts(1000, 900), _counts(1000, 869), config))["success_rate"]
    assert past.status == "worse"


def test_the_default_success_tolerance_is_relative_to_the_baseline():
    rule = default_config().metrics["success_rate"]
    assert rule.relative and rule.tolerance == pytest.approx(0.0343)
    # 31 fewer successes of 1,000: 3.44 % of 900 is past it, 3.26 % of 950 is not
    low = by_name(evaluate(_counts(1000, 900), _counts(1000, 869)))["success_rate"]
    assert low.effect == pytest.approx(31 / 900) and low.status == "worse"
    high = by_name(evaluate(_counts(1000, 950), _counts(1000, 919)))["success_rate"]
    assert high.effect == pytest.approx(31 / 950) and high.status == "pass"
