"""The release gate's error rates on seeded synthetic cohorts with known effects.

    .venv/bin/python bench/bench_gate.py [--null-trials 2000] [--power-trials 1000]
        [--canary-trials 2000] [--store-events 10000000] [--json]

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

``canary``: the control loop's sequential test (:mod:`agentledger.streams.canary`, the
packaged policy's settings) looking after *every* candidate run, the candidate getting one
run in ``1 + ratio`` (ratio 4 by default, also 1 and 9): the share of healthy candidates
(90 % vs 90 %) ever degraded over 5,000 of their runs (goal ≤ 0.01), and the share of
candidates 10 points worse (90 % → 80 %) degraded within 300 of their runs, with the
median runs it took. Beside it, the fixed-sample one-sided z-test at the same alpha
repeated at every look, as a dashboard alert would: the peeking bias the mSPRT avoids.
The trials are vectorized (numpy, the module's formula); a few are replayed through the
real :class:`~agentledger.streams.canary.Canaries` and must agree look for look.

``gate_10m_s``: ``agentledger gate``'s query and statistics over ``--store-events`` events
(10M: 2M runs of five events, two versions) generated in an embedded chdb store with
``INSERT ... SELECT FROM numbers()`` (goal ≤ 2 s; best of 3 calls after one warm-up).
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

from agentledger.streams.canary import Canaries
from agentledger.streams.control_policy import load_policy
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


def canary_first_look(seed: int, trials: int, base: float, cand: float, horizon: int,
                      ratio: int, *, fixed_z: bool = False) -> np.ndarray:
    """:func:`_first_look` in chunks of 200 trials (bounded memory)."""
    rng = np.random.default_rng(seed)
    chunks = [_first_look(rng, min(200, trials - done), base, cand, horizon, ratio,
                          fixed_z=fixed_z, check=done == 0)
              for done in range(0, trials, 200)]
    return np.concatenate(chunks)


def _first_look(rng: np.random.Generator, trials: int, base: float, cand: float,
                horizon: int, ratio: int, *, fixed_z: bool, check: bool) -> np.ndarray:
    """Per trial, the candidate run at which the canary degrades it (0 = never within
    ``horizon``), the policy's settings, the same order as :class:`Canaries` counts: the
    candidate's first run opens it, then ``ratio`` baseline runs before each next one.
    ``fixed_z``: a one-sided two-proportion z-test at alpha instead, at every look."""
    from scipy.special import log_ndtr

    c = load_policy().canary
    n_c = np.arange(1, horizon + 1)
    n_b = ratio * (n_c - 1)
    s_c = np.cumsum(rng.random((trials, horizon)) < cand, axis=1)
    base_runs = rng.binomial(ratio, base, (trials, horizon))
    base_runs[:, 0] = 0
    s_b = np.cumsum(base_runs, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = n_b + n_c
        pooled = np.clip((s_b + s_c) / total, 0.5 / total, 1 - 0.5 / total)
        variance = pooled * (1 - pooled) * (1 / n_b + 1 / n_c)
        drop = s_b / n_b - s_c / n_c
        if fixed_z:
            hit = drop / np.sqrt(variance) >= stats.norm.ppf(1 - c.alpha)
        else:
            d = drop - c.margin
            t2 = c.mixture_sd ** 2
            tot = variance + t2
            m, sd = t2 * d / tot, np.sqrt(variance * t2 / tot)
            log_lr = (math.log(2) + log_ndtr(m / sd) + 0.5 * np.log(variance / tot)
                      + t2 * d * d / (2 * variance * tot))
            hit = log_lr >= math.log(1 / c.alpha)
    hit &= (np.minimum(n_b, n_c) >= c.min_runs)[None, :]
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    if check and not fixed_z:  # the vectorized formula is the module's: replay a few
        for trial in range(min(5, trials)):
            assert first[trial] == _replay(base_runs[trial], s_c[trial], ratio), trial
    return first


def _replay(base_runs: np.ndarray, s_c: np.ndarray, ratio: int) -> int:
    c = load_policy().canary
    canaries = Canaries(alpha=c.alpha, mixture_sd=c.mixture_sd, margin=c.margin,
                        min_runs=c.min_runs, state="read_only")
    for _ in range(c.min_runs):  # the baseline is live before the candidate appears
        canaries.finished("t", "a", "base", True, 0.0)
    ok_c = np.diff(np.concatenate(([0], s_c)))
    for i, ok in enumerate(ok_c):
        if i > 0:
            for j in range(ratio):
                canaries.finished("t", "a", "base", bool(j < base_runs[i]), 0.0)
        if canaries.finished("t", "a", "cand", bool(ok), 0.0) is not None:
            return i + 1
    return 0


def canary_rows(trials: int) -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, object]] = {}
    for ratio in (4, 1, 9):
        healthy = canary_first_look(11 + ratio, trials, 0.90, 0.90, 5000, ratio)
        bad = canary_first_look(21 + ratio, trials, 0.90, 0.80, 300, ratio)
        peeking = canary_first_look(31 + ratio, trials, 0.90, 0.90, 5000, ratio, fixed_z=True)
        caught = bad[bad > 0]
        rows[f"candidate_share_1_in_{ratio + 1}"] = {
            "trials": trials,
            "healthy_degraded_within_5000": round(float((healthy > 0).mean()), 4),
            "drop_10pt_degraded_within_300": round(float((bad > 0).mean()), 4),
            "drop_10pt_median_runs": float(np.median(caught)) if caught.size else None,
            "fixed_z_every_look_healthy_degraded": round(float((peeking > 0).mean()), 4)}
    return rows


FILL_SQL = (
    "INSERT INTO agentledger.events (event_id, event_type, ts, tenant, agent, agent_version, "
    "workflow, run_id, seq, model, tool, tool_version, status, outcome, cost_usd, "
    "latency_ms, body) SELECT generateUUIDv4(), "
    "['run.started', 'model.call', 'tool.call', 'tool.result', 'run.finished']"
    "[number % 5 + 1], "
    "toDateTime64(now64(6) - INTERVAL 1 DAY, 6) + toIntervalMicrosecond(number * 4000), "
    "'acme', 'bot', if(intDiv(number, 5) % 2 = 0, '1.4.1', '1.4.2'), "
    "concat('w', toString(intDiv(number, 5) % 3)), toString(intDiv(number, 5)), number % 5, "
    "if(number % 5 = 1, 'gpt-4o', ''), if(number % 5 IN (2, 3), 'crm', ''), "
    "if(number % 5 = 2, '1', ''), "
    "if(number % 5 = 3, if(rand() % 100 < 2, 'error', 'ok'), ''), "
    "if(number % 5 = 4, if(rand() % 100 < 90, 'success', 'failure'), ''), "
    "if(number % 5 = 1, 0.01 + (rand() % 100) / 10000, 0), "
    "if(number % 5 = 4, rand() % 5000, 0), "
    "multiIf(number % 5 = 0, '{\"prompt_version\":\"7\",\"policy_version\":\"1\"}', "
    "number % 5 = 4, '{\"outcome\":\"success\"}', '{\"provider\":\"openai\"}') "
    "FROM numbers({n:UInt64})")


def gate_over_store(events: int) -> dict[str, object]:
    """Fill an embedded store with ``events`` and time the gate's query + statistics."""
    import datetime as dt
    import tempfile

    from agentledger.core.settings import Settings
    from agentledger.queries import gate as gate_queries
    from agentledger.queries.common import Scope
    from agentledger.services import open_store

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", kafka_bootstrap="127.0.0.1:1")
        client = open_store(settings)
        started = time.perf_counter()
        client.command(FILL_SQL, parameters={"n": events})
        filled = time.perf_counter() - started
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        took, found = [], {}
        for _ in range(4):
            started = time.perf_counter()
            found = gate_queries.gate(client, Scope(frozenset({"acme"})),
                                      baseline="agent_version=1.4.1",
                                      candidate="agent_version=1.4.2", since=since)
            took.append(time.perf_counter() - started)
        client.close()
    return {"events": events, "fill_s": round(filled, 1),
            "gate_s_best_of_3": round(min(took[1:]), 3), "gate_s_first": round(took[0], 3),
            "runs_per_arm": found["baseline_runs"], "verdict": found["verdict"]}


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
    ap.add_argument("--canary-trials", type=int, default=2000)
    ap.add_argument("--store-events", type=int, default=10_000_000,
                    help="events for gate_10m_s (0: skip)")
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
    canary = canary_rows(args.canary_trials) if args.canary_trials else {}
    store = gate_over_store(args.store_events) if args.store_events else {}
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
        "canary": canary,
        "canary_goal": "healthy degraded <= 0.01; a 10-point drop degraded within 300 runs",
        "gate_10m_s": store.get("gate_s_best_of_3"),
        "gate_10m_goal_s": 2.0,
        "store": store,
        "scenarios": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, row in {**rows, **canary}.items():
        print(f"{name:20} " + " ".join(f"{k}={v}" for k, v in row.items()))
    for key, value in figures.items():
        if key not in ("scenarios", "canary"):
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
