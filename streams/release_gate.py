"""The release gate's decision: did the candidate cohort do worse than the baseline?

Pure logic, no Kafka or ClickHouse: the shell (``agentledger/queries/gate.py``) counts each
cohort's runs into an :class:`Arm`, and :func:`evaluate` turns two arms and a
:class:`GateConfig` (``default_gate.yaml`` or the user's ``gate.yaml``) into a verdict.

Per metric: both estimates, the difference with a confidence interval, a one-sided test
for "worse" (:mod:`agentledger.streams.gate_stats`), Holm-adjusted across the metrics. A
metric is *worse* when its adjusted p-value is at most ``alpha`` and its point estimate is
worse than the tolerance (significant and large enough to matter). Verdict, after
Kayenta: any critical metric worse → ``fail``; else the weighted share of metrics not
worse is the score: ``pass`` at ``pass_score`` or more, ``marginal`` at ``marginal_score``
or more, ``fail`` below. Too few runs in either arm is ``insufficient_data``: never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentledger.streams import gate_stats

Verdict = Literal["pass", "marginal", "fail", "insufficient_data"]
EXIT_CODES: Final[dict[str, int]] = {"pass": 0, "marginal": 1, "fail": 2,
                                     "insufficient_data": 3}
COHORT_KEYS: Final = ("agent_version", "prompt_version", "model", "policy_version",
                      "tool_version", "release")
# name → (kind, what counts as bad, unit). Rates: higher success is better, every other
# rate counts a bad outcome. Samples: more cost or latency is worse.
METRICS: Final[dict[str, tuple[str, str]]] = {
    "success_rate": ("rate", "successful runs / finished runs"),
    "cost_per_success": ("sample", "USD spent / successful runs; tested on each success's cost"),
    "tool_error_rate": ("rate", "tool results in error or timeout / tool results"),
    "policy_block_rate": ("rate", "runs with a policy deny / finished runs"),
    "rollback_rate": ("rate", "runs rolled back / finished runs"),
    "p95_latency": ("sample", "95th percentile of run duration, ms; tested on every run"),
}
# Below this many values a Mann-Whitney test says nothing useful about a shift.
MIN_SAMPLE: Final = 10
# A relative tolerance cannot scale a rise from a baseline rate of 0: it counts as this.
RELATIVE_FROM_ZERO: Final = 1000.0
# "Worse than the tolerance" is strict, and decided on the counts, not on float noise:
# 0.9 - 0.87 is 0.030000000000000027 in binary, which must not exceed a 0.03 tolerance.
EXACT: Final = 1e-9


class GateConfigError(ValueError):
    """A gate.yaml that cannot be used; the message names the field."""


class CohortError(ValueError):
    """A cohort that cannot be parsed; the message says what is expected."""


class MetricRule(BaseModel):
    """``tolerance`` is absolute for a rate (0.02 = 2 points) unless ``relative``: then it
    is a share of the baseline's rate (success: 0.0343 = 3.43 % fewer successes than the
    baseline's). Cost and latency tolerances are always relative."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tolerance: float = Field(ge=0, le=10)
    weight: float = Field(ge=0, le=1000)
    critical: bool = False
    relative: bool = False


class GateConfig(BaseModel):
    """A versioned gate.yaml: error rate, minimum data, scoring and per-metric rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str = Field(min_length=1, max_length=64)
    alpha: float = Field(gt=0, lt=0.5)
    min_runs: int = Field(ge=1, le=10_000_000)
    pass_score: float = Field(ge=0, le=100)
    marginal_score: float = Field(ge=0, le=100)
    metrics: dict[str, MetricRule]

    @model_validator(mode="after")
    def _consistent(self) -> GateConfig:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}: use "
                             f"{', '.join(METRICS)}")
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not exceed pass_score")
        if not any(rule.weight > 0 for rule in self.metrics.values()):
            raise ValueError("at least one metric needs a weight above 0")
        return self


def parse_config(text: str, source: str = "gate.yaml") -> GateConfig:
    """A gate config from YAML text; :class:`GateConfigError` naming the field if bad."""
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise GateConfigError(f"{source}: not YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and "version" in data:
        data["version"] = str(data["version"])
    try:
        return GateConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise GateConfigError(f"{source}: {where}: {first['msg']}") from None


def default_config() -> GateConfig:
    """The packaged ``default_gate.yaml``, beside the control policy."""
    text = resources.files("agentledger.streams").joinpath("default_gate.yaml").read_text()
    return parse_config(text, "default_gate.yaml")


def parse_cohort(text: str) -> dict[str, str]:
    """``agent_version=1.4.2`` or several ``key=value`` joined by ``,`` (all must hold)."""
    if not text or not text.strip():
        raise CohortError("a cohort is key=value, e.g. agent_version=1.4.2")
    found: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise CohortError(f"{part.strip()!r} is not key=value (e.g. agent_version=1.4.2)")
        if key not in COHORT_KEYS:
            raise CohortError(f"cannot select runs by {key!r}: use {', '.join(COHORT_KEYS)}")
        if key in found:
            raise CohortError(f"{key} given twice in one cohort")
        if len(value) > 128:
            raise CohortError(f"{key}: value longer than 128 characters")
        found[key] = value
    return found


@dataclass(frozen=True)
class Arm:
    """What one cohort did: counts, and the samples the distribution tests need."""

    runs: int
    successes: int
    cost_usd: float
    tool_results: int
    tool_errors: int
    blocked_runs: int
    rollback_runs: int
    success_costs: Sequence[float] = ()
    durations_ms: Sequence[float] = ()


@dataclass
class MetricResult:
    name: str
    baseline: float | None
    candidate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    ci_of: str
    p_value: float | None
    tolerance: float
    weight: float
    critical: bool
    p_adjusted: float | None = None
    status: Literal["pass", "worse", "insufficient"] = "insufficient"
    effect: float | None = None  # how much worse, on the tolerance's scale
    definition: str = ""
    relative: bool = False  # the tolerance (and effect) is a share of the baseline


@dataclass
class GateResult:
    verdict: Verdict
    exit_code: int
    score: float | None
    reasons: list[str]
    config_version: str
    alpha: float
    confidence: float
    baseline_runs: int
    candidate_runs: int
    metrics: list[MetricResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(name: str, base: Arm, cand: Arm, rule: MetricRule, conf: float) -> MetricResult:
    counts = {"success_rate": (base.successes, base.runs, cand.successes, cand.runs),
              "tool_error_rate": (base.tool_errors, base.tool_results, cand.tool_errors,
                                  cand.tool_results),
              "policy_block_rate": (base.blocked_runs, base.runs, cand.blocked_runs, cand.runs),
              "rollback_rate": (base.rollback_runs, base.runs, cand.rollback_runs, cand.runs)}
    k_b, n_b, k_c, n_c = counts[name]
    result = MetricResult(name, None, None, None, None, None, "difference", None,
                          rule.tolerance, rule.weight, rule.critical,
                          definition=METRICS[name][1], relative=rule.relative)
    if n_b == 0 or n_c == 0:
        return result
    higher_better = name == "success_rate"
    test = gate_stats.rate_test(k_b, n_b, k_c, n_c, bad_is_k=not higher_better,
                                confidence=conf)
    result.baseline, result.candidate = test.baseline, test.candidate
    result.difference, result.ci_low, result.ci_high = test.difference, test.ci_low, test.ci_high
    result.p_value = test.p_value
    worse_by = -test.difference if higher_better else test.difference
    if rule.relative:  # a share of the baseline's rate; from a baseline of 0, any rise
        worse_by = worse_by / test.baseline if test.baseline > 0 else \
            (RELATIVE_FROM_ZERO if worse_by > 0 else 0.0)
    result.effect = worse_by
    return result


def _sample(name: str, base: Arm, cand: Arm, rule: MetricRule, conf: float) -> MetricResult:
    result = MetricResult(name, None, None, None, None, None, "hodges_lehmann_shift", None,
                          rule.tolerance, rule.weight, rule.critical,
                          definition=METRICS[name][1])
    if name == "cost_per_success":
        b_values, c_values = base.success_costs, cand.success_costs
        b_est = base.cost_usd / base.successes if base.successes else None
        c_est = cand.cost_usd / cand.successes if cand.successes else None
    else:
        b_values, c_values = base.durations_ms, cand.durations_ms
        b_est = gate_stats.percentile(b_values, 95) if b_values else None
        c_est = gate_stats.percentile(c_values, 95) if c_values else None
    if len(b_values) < MIN_SAMPLE or len(c_values) < MIN_SAMPLE or b_est is None \
            or c_est is None:
        return result
    test = gate_stats.shift_test(b_values, c_values, confidence=conf)
    result.baseline, result.candidate, result.difference = b_est, c_est, c_est - b_est
    result.ci_low, result.ci_high, result.p_value = test.ci_low, test.ci_high, test.p_value
    result.effect = (c_est - b_est) / b_est if b_est > 0 else (0.0 if c_est <= 0 else 1.0)
    return result


def _describe(m: MetricResult) -> str:
    def show(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" if METRICS[m.name][0] == "rate" else f"{v:.6g}"

    scale = " relative" if m.relative or METRICS[m.name][0] == "sample" else ""
    return (f"{m.name} worse: {show(m.candidate)} vs {show(m.baseline)} "
            f"(difference {m.difference:+.4g}, {m.ci_of} CI {m.ci_low:.4g}..{m.ci_high:.4g}, "
            f"adjusted p {m.p_adjusted:.2g}, tolerance {m.tolerance:g}{scale})")


def evaluate(baseline: Arm, candidate: Arm, config: GateConfig | None = None) -> GateResult:
    """The gate's verdict for ``candidate`` against ``baseline`` under ``config``."""
    config = config or default_config()
    confidence = 1 - config.alpha
    results: list[MetricResult] = []
    for name, rule in config.metrics.items():
        compute = _rate if METRICS[name][0] == "rate" else _sample
        results.append(compute(name, baseline, candidate, rule, confidence))
    gated = {m.name: m for m in results if m.p_value is not None and m.weight > 0}
    adjusted = gate_stats.holm({n: m.p_value or 1.0 for n, m in gated.items()},
                               {n: m.weight for n, m in gated.items()})
    for name, p_adj in adjusted.items():
        metric = gated[name]
        metric.p_adjusted = p_adj
        worse = p_adj <= config.alpha and (metric.effect or 0.0) > metric.tolerance + EXACT
        metric.status = "worse" if worse else "pass"
    for metric in results:
        if metric.p_value is not None and metric.weight == 0:
            metric.status = "pass"  # reported, not gated
    result = GateResult("pass", 0, None, [], config.version, config.alpha, confidence,
                        baseline.runs, candidate.runs, results)
    return _verdict(result, config)


def _verdict(result: GateResult, config: GateConfig) -> GateResult:
    few = [f"{arm} has {n} finished runs (min_runs {config.min_runs})"
           for arm, n in (("baseline", result.baseline_runs),
                          ("candidate", result.candidate_runs)) if n < config.min_runs]
    missing = [f"{m.name}: not enough data in one arm" for m in result.metrics
               if m.critical and m.weight > 0 and m.status == "insufficient"]
    worse = [m for m in result.metrics if m.status == "worse"]
    scored = [m for m in result.metrics if m.weight > 0 and m.status != "insufficient"]
    total = sum(m.weight for m in scored)
    if total > 0:
        result.score = round(100 * sum(m.weight for m in scored if m.status == "pass") / total,
                             2)
    result.reasons = [_describe(m) for m in worse]
    if few or missing:
        result.verdict = "insufficient_data"
        result.reasons = few + missing + result.reasons
    elif any(m.critical for m in worse):
        result.verdict = "fail"
    elif result.score is not None and result.score >= config.pass_score:
        result.verdict = "pass"
    elif result.score is not None and result.score >= config.marginal_score:
        result.verdict = "marginal"
    else:
        result.verdict = "fail"
    result.exit_code = EXIT_CODES[result.verdict]
    return result
