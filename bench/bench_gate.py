"""The release gate's error rates on seeded synthetic cohorts with known effects.

    .venv/bin/python bench/bench_gate.py [--null-trials 2000] [--power-trials 1000] [--json]

Pure in-process (no store): each trial draws two cohorts of ``--runs`` runs per arm
(success, two tool calls per run, policy blocks, rollbacks, lognormal cost and latency)
and runs :func:`agentledger.streams.release_gate.evaluate` with the packaged gate.yaml.

- ``false_fail_rate``: share of trials that *fail* when nothing differs (goal ≤ 0.01);
- ``power_5pt``: share that fail a 90 % → 85 % success drop, 1,000 runs per arm (≥ 0.90).

Beside them, the same trials through a fixed-sample test a user could write by hand: a
one-sided two-proportion z-test on success alone at 0.05, no tolerance, no correction;
and the Neyman-Pearson ceiling: the best power any test of success alone can have at
the gate's false-fail rate (normal approximation), which says how much room there is.
Other rows: a 3-point and a 10-point drop, a 20 % pricier model, ten runs per arm.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentledger.streams.release_gate import Arm, GateConfig, default_config, evaluate


def cohort(rng: np.random.Generator, n: int, success: float, cost: float = 0.01) -> Arm:
    ok = rng.random(n) < success
    costs = cost * rng.lognormal(0.0, 0.5, n)
    return Arm(runs=n, successes=int(ok.sum()), cost_usd=float(costs.sum()),
               tool_results=2 * n, tool_errors=int(rng.binomial(2 * n, 0.02)),
               blocked_runs=int(rng.binomial(n, 0.03)),
               rollback_runs=int(rng.binomial(n, 0.01)),
               success_costs=costs[ok].tolist(),
               durations_ms=(1000 * rng.lognormal(0.0, 0.6, n)).tolist())


def z_test_fails(base: Arm, cand: Arm, alpha: float = 0.05) -> bool:
    """The hand-written gate: one-sided pooled z-test, success rate only."""
    p_b, p_c = base.successes / base.runs, cand.successes / cand.runs
    pooled = (base.successes + cand.successes) / (base.runs + cand.runs)
    se = math.sqrt(pooled * (1 - pooled) * (1 / base.runs + 1 / cand.runs))
    return se > 0 and (p_b - p_c) / se > stats.norm.ppf(1 - alpha)


def scenario(seed: int, trials: int, n: int, success: float, cost: float = 0.01,
             ) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    config = default_config()
    verdicts: Counter[str] = Counter()
    fixed = 0
    took: list[float] = []
    for _ in range(trials):
        base = cohort(rng, n, 0.90)
        cand = cohort(rng, n, success, cost)
        started = time.perf_counter()
        verdicts[evaluate(base, cand, config).verdict] += 1
        took.append(time.perf_counter() - started)
        fixed += z_test_fails(base, cand)
    return {"trials": trials, "runs_per_arm": n, "candidate_success": success,
            "candidate_cost_ratio": round(cost / 0.01, 3),
            "fail": round(verdicts["fail"] / trials, 4),
            "marginal": round(verdicts["marginal"] / trials, 4),
            "pass": round(verdicts["pass"] / trials, 4),
            "insufficient_data": round(verdicts["insufficient_data"] / trials, 4),
            "fixed_z_test_fail": round(fixed / trials, 4),
            "evaluate_ms_median": round(1000 * statistics.median(took), 2)}


def exact_success_rule(config: GateConfig, n: int = 1000, base: float = 0.90,
                       cand: float = 0.85) -> tuple[float, float]:
    """The success metric's fail rule evaluated exactly, no Monte Carlo error: summed over
    every (baseline, candidate) success count weighted by its binomial probability, the
    chance of "worse" (Fisher's one-sided p times Holm's first-step factor at most alpha,
    and the drop beyond the tolerance) with no difference and with ``base`` → ``cand``.
    This is the success rule alone, tested first in Holm's order (the bench's other
    metrics, all null, move the Monte Carlo figures by less than their standard error)."""
    rule = config.metrics["success_rate"]
    factor = sum(r.weight for r in config.metrics.values() if r.weight > 0) / rule.weight
    k = np.arange(int(n * min(base, cand) - 8 * math.sqrt(n)), n + 1)
    k_b, k_c = np.meshgrid(k, k, indexing="ij")
    p_fisher = stats.hypergeom.cdf(k_c, 2 * n, k_b + k_c, n)
    drop = (k_b - k_c) / n
    effect = np.divide(drop, k_b / n, out=np.zeros_like(drop), where=k_b > 0) \
        if rule.relative else drop
    worse = (p_fisher * factor <= config.alpha) & (effect > rule.tolerance + 1e-9)
    p_b = stats.binom.pmf(k, n, base)
    null = float((np.outer(p_b, p_b) * worse).sum())
    power = float((np.outer(p_b, stats.binom.pmf(k, n, cand)) * worse).sum())
    return round(null, 5), round(power, 5)


def np_ceiling(false_rate: float, n: int = 1000) -> float:
    """Best power of any test on success alone at ``false_rate`` (normal approximation):
    reject when the drop exceeds c, with c set by the null (90 % vs 90 %)."""
    sd0 = math.sqrt(2 * 0.9 * 0.1 / n)
    sd1 = math.sqrt((0.9 * 0.1 + 0.85 * 0.15) / n)
    c = stats.norm.ppf(1 - max(false_rate, 1e-9)) * sd0
    return float(stats.norm.cdf((0.05 - c) / sd1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--null-trials", type=int, default=2000)
    ap.add_argument("--power-trials", type=int, default=1000)
    ap.add_argument("--other-trials", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    rows = {
        "no_difference": scenario(1, args.null_trials, args.runs, 0.90),
        "drop_5pt": scenario(2, args.power_trials, args.runs, 0.85),
        "drop_3pt": scenario(3, args.other_trials, args.runs, 0.87),
        "drop_10pt": scenario(4, args.other_trials, args.runs, 0.80),
        "cost_plus_20pct": scenario(5, args.other_trials, args.runs, 0.90, cost=0.012),
        "ten_runs_drop_50pt": scenario(6, args.other_trials, 10, 0.40),
    }
    false_fail = float(rows["no_difference"]["fail"])  # type: ignore[arg-type]
    exact_null, exact_power = exact_success_rule(default_config(), args.runs)
    figures = {
        "false_fail_rate": false_fail,
        "false_fail_goal": 0.01,
        "power_5pt": rows["drop_5pt"]["fail"],
        "power_5pt_goal": 0.90,
        "exact_success_rule_false_fail_rate": exact_null,
        "exact_success_rule_power_5pt": exact_power,
        "fixed_z_test_false_fail_rate": rows["no_difference"]["fixed_z_test_fail"],
        "fixed_z_test_power_5pt": rows["drop_5pt"]["fixed_z_test_fail"],
        "np_ceiling_power_5pt_at_false_fail_0.01": round(np_ceiling(0.01), 4),
        "np_ceiling_power_5pt_at_measured_false_fail": round(np_ceiling(false_fail), 4),
        "gate_yaml_version": default_config().version,
        "scenarios": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, row in rows.items():
        print(f"{name:20} " + " ".join(f"{k}={v}" for k, v in row.items()))
    for key, value in figures.items():
        if key != "scenarios":
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
