"""The release gate's statistics, one function per kind of metric, all from scipy.

Why these tests (docs/release-gate.md has the long form):

- **Rates** (success, tool errors, policy blocks, rollbacks) are counts out of a total in
  each arm: a 2x2 table. Fisher's exact test gives a p-value that holds its level for any
  sample size (no normal approximation, which is anti-conservative on the small cohorts a
  fresh release has). The interval on the difference is Newcombe's hybrid score interval
  built from each arm's Wilson interval: it stays inside [-1, 1] and behaves at 0 % and
  100 %, where the Wald interval collapses.
- **Money and time** (cost of a successful task, run latency) are skewed, heavy-tailed
  samples: the Mann-Whitney U test compares whole distributions without assuming a shape,
  and the Hodges-Lehmann estimate (the median of all candidate - baseline differences)
  with its distribution-free interval says by how much, in dollars or milliseconds. This
  is the pair Netflix's Kayenta uses for canary analysis.

Every test is one-sided, in the direction that would make the candidate worse: a gate
blocks regressions, and a one-sided test spends all of its error budget there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Hodges-Lehmann needs every pairwise difference; beyond this many pairs each arm is
# subsampled (seeded, so an answer is reproducible) to keep one gate call bounded.
MAX_PAIRS = 4_000_000
_SUBSAMPLE = 2_000


@dataclass(frozen=True)
class RateTest:
    """A rate in each arm, their difference (candidate - baseline), its interval and the
    one-sided p-value that the candidate has more of the bad outcome."""

    baseline: float
    candidate: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class ShiftTest:
    """The Hodges-Lehmann shift (candidate - baseline), its interval, and the one-sided
    Mann-Whitney p-value that candidate values are larger."""

    shift: float
    ci_low: float
    ci_high: float
    p_value: float


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of ``k`` out of ``n`` (scipy's implementation)."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate_test(k_base: int, n_base: int, k_cand: int, n_cand: int, *,
              bad_is_k: bool, confidence: float) -> RateTest:
    """Compare ``k`` out of ``n`` between arms. ``bad_is_k``: whether ``k`` counts the bad
    outcome (tool errors) or the good one (successes); the p-value is always for "the
    candidate is worse"."""
    if n_base <= 0 or n_cand <= 0:
        raise ValueError("each arm needs at least one trial")
    p_b, p_c = k_base / n_base, k_cand / n_cand
    l_b, u_b = wilson(k_base, n_base, confidence)
    l_c, u_c = wilson(k_cand, n_cand, confidence)
    diff = p_c - p_b
    low = diff - math.sqrt((p_c - l_c) ** 2 + (u_b - p_b) ** 2)
    high = diff + math.sqrt((u_c - p_c) ** 2 + (p_b - l_b) ** 2)
    bad_c = k_cand if bad_is_k else n_cand - k_cand
    bad_b = k_base if bad_is_k else n_base - k_base
    table = [[bad_c, n_cand - bad_c], [bad_b, n_base - bad_b]]
    p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)
    return RateTest(p_b, p_c, diff, max(-1.0, low), min(1.0, high), min(1.0, p_value))


def _subsample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if values.size <= _SUBSAMPLE:
        return values
    return rng.choice(values, size=_SUBSAMPLE, replace=False)


def shift_test(baseline: Sequence[float], candidate: Sequence[float], *,
               confidence: float) -> ShiftTest:
    """Mann-Whitney U (one-sided: candidate larger) and the Hodges-Lehmann shift with its
    distribution-free interval (the order statistics of the pairwise differences that the
    U distribution puts at the interval's ends; normal approximation of U)."""
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    if base.size == 0 or cand.size == 0:
        raise ValueError("each arm needs at least one value")
    p_value = float(stats.mannwhitneyu(cand, base, alternative="greater").pvalue)
    if not math.isfinite(p_value):  # every value tied: no evidence either way
        p_value = 1.0
    if base.size * cand.size > MAX_PAIRS:
        rng = np.random.default_rng(0)
        base, cand = _subsample(base, rng), _subsample(cand, rng)
    n_b, n_c = base.size, cand.size
    diffs = np.subtract.outer(cand, base).ravel()
    pairs = diffs.size
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    k = math.floor(pairs / 2 - z * math.sqrt(n_b * n_c * (n_b + n_c + 1) / 12))
    k = min(max(k, 0), (pairs - 1) // 2)
    # Only five order statistics are needed: a partition is linear, a sort is not.
    low_mid, high_mid = (pairs - 1) // 2, pairs // 2
    ranks = sorted({k, low_mid, high_mid, pairs - 1 - k})
    diffs.partition(ranks)
    shift = (float(diffs[low_mid]) + float(diffs[high_mid])) / 2
    return ShiftTest(shift, float(diffs[k]), float(diffs[pairs - 1 - k]), min(1.0, p_value))


def holm(p_values: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Holm's sequentially rejective procedure, weighted (Holm 1979): adjusted p-values
    such that rejecting every ``p_adj <= alpha`` keeps the chance of any false rejection
    at most ``alpha``. A hypothesis with a larger weight gets a larger share of alpha at
    each step; equal weights give the textbook Holm-Bonferroni."""
    names = [n for n in p_values if weights.get(n, 0) > 0]
    if not names:
        return {}
    order = sorted(names, key=lambda n: p_values[n] / weights[n])
    remaining = sum(weights[n] for n in names)
    adjusted: dict[str, float] = {}
    running = 0.0
    for name in order:
        step = min(1.0, p_values[name] * remaining / weights[name])
        running = max(running, step)
        adjusted[name] = running
        remaining -= weights[name]
    return adjusted


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as ClickHouse's quantile does)."""
    return float(np.percentile(np.asarray(values, dtype=float), q))
