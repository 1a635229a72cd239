"""Exact binomial bounds for "is this error rate really above the threshold?".

A window with ``n`` calls and ``x`` failures says the tool (or agent) is failing more than
``threshold`` only when so many failures would be rare had the true rate been the
threshold itself: ``P(X >= x | n, threshold) <= alpha``. That is the one-sided exact
(Clopper-Pearson, i.e. Beta) test; it is equivalent to "the Clopper-Pearson lower
confidence bound of the rate, at confidence ``1 - alpha``, exceeds the threshold".

Why exact and not Wilson or a normal approximation: the windows that matter most are tiny
(a 5-calls-a-minute agent has 5 calls in a minute) and both approximations are
anti-conservative there; the exact test bounds the false-trip probability of one look at
``alpha`` for every ``n``, by construction.

The hot path only compares ``x`` with :func:`critical_failures` (memoised per
``(n, threshold, alpha)``), so deciding costs one dict lookup per result.
"""

from __future__ import annotations

import math


def _log_pmf(k: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def upper_tail(x: int, n: int, p: float) -> float:
    """``P(X >= x)`` for ``X ~ Binomial(n, p)``, summed from ``x`` upwards until the terms
    no longer matter (they fall geometrically above the mean)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    total = 0.0
    term = math.exp(_log_pmf(x, n, p))
    ratio_base = p / (1 - p)
    k = x
    while k <= n:
        total += term
        if term < total * 1e-15:
            break
        term *= (n - k) / (k + 1) * ratio_base
        k += 1
    return min(1.0, total)


_CRITICAL: dict[tuple[int, float, float], int] = {}


def critical_failures(n: int, threshold: float, alpha: float) -> int:
    """The fewest failures out of ``n`` calls that make ``P(X >= x | n, threshold)`` at
    most ``alpha``; ``n + 1`` when even ``n`` failures would not (too few calls to say).

    Memoised; the critical count grows by at most one per extra call, so a neighbour's
    answer (or a normal-approximation guess) is a start a step or two from the answer."""
    key = (n, threshold, alpha)
    hit = _CRITICAL.get(key)
    if hit is not None:
        return hit
    if n <= 0:
        return 1
    near = _CRITICAL.get((n - 1, threshold, alpha))
    if near is None:
        z = math.sqrt(max(2 * math.log(1 / alpha), 1.0))  # rough normal quantile
        near = int(n * threshold + z * math.sqrt(n * threshold * (1 - threshold)))
    x = max(1, min(n + 1, near))
    while x > 1 and upper_tail(x - 1, n, threshold) <= alpha:
        x -= 1
    while x <= n and upper_tail(x, n, threshold) > alpha:
        x += 1
    if len(_CRITICAL) > 200_000:
        _CRITICAL.clear()
    _CRITICAL[key] = x
    return x


def lower_bound(x: int, n: int, alpha: float) -> float:
    """Clopper-Pearson lower confidence bound of the rate (one-sided, ``1 - alpha``):
    the largest ``p`` with ``P(X >= x | n, p) <= alpha``. For explanations, not the hot
    path (60 bisection steps)."""
    if x <= 0 or n <= 0:
        return 0.0
    lo, hi = 0.0, x / n
    for _ in range(60):
        mid = (lo + hi) / 2
        if upper_tail(x, n, mid) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def exceeds(x: int, n: int, threshold: float, alpha: float) -> bool:
    """True when ``x`` failures in ``n`` calls are significant evidence of a rate above
    ``threshold`` (one-sided exact test at level ``alpha``)."""
    return n > 0 and x >= critical_failures(n, threshold, alpha)
