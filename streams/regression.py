"""Regression sets: real tasks from the ledger, re-run on a release, compared paired.

Pure logic, no Kafka or ClickHouse. A :class:`RegressionSet` is the versioned file
``agentledger regression export`` writes (each case: the input's reference and hash, the
outcome and the tools the original run called). ``agentledger regression run`` runs an
agent over every case under a release label; :func:`compare` then judges one label's
outcomes against another's on the *same* cases.

Why paired statistics: both labels ran the same inputs, so each case is its own control.
The cases where both succeeded or both failed say nothing about a difference; only the
discordant ones do (a case the candidate broke, a case it fixed). McNemar's exact test is
the binomial test on those: under "no difference" a discordant case is equally likely to
go either way, so the number the candidate broke out of all discordant ones is
Binomial(d, 1/2) (``scipy.stats.binomtest``, one-sided: "the candidate breaks more than
it fixes"). It needs far fewer cases than comparing two independent success rates, which
is why a set of 200 can gate a release. The cost is paired too: the Wilcoxon signed-rank
test on each case's cost difference (one-sided, "the candidate costs more").

Verdict, in the release gate's terms (exit codes alike): the success drop (broken - fixed,
over the paired cases) beyond ``max_drop`` *and* significant at ``alpha`` → ``fail``; a
significant cost increase beyond ``cost_tolerance`` (relative, on the summed cost) →
``marginal``; fewer than ``min_cases`` paired cases → ``insufficient_data``; else
``pass``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentledger.streams.release_gate import EXIT_CODES

SET_FORMAT: Final = "agentledger.regression_set/1"
LABEL_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,47}$"
RUN_ID_PREFIX: Final = "regression"
Verdict = Literal["pass", "marginal", "fail", "insufficient_data"]


class SetError(ValueError):
    """A set file that cannot be used; the message says why."""


class Case(BaseModel):
    """One real task: where its input is, what it hashed to, how the original run went."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    case_id: str = Field(pattern=r"^[0-9]{1,6}$")
    run_id: str = Field(min_length=1, max_length=128, description="the original run")
    agent: str = Field(min_length=1, max_length=128)
    agent_version: str = Field(max_length=128)
    input_ref: str | None = Field(None, max_length=4096)
    inputs_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    outcome: str = Field(max_length=32)
    tools: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0


class RegressionSet(BaseModel):
    """A versioned regression set file (JSON). ``set_id`` is the hash of its cases, so two
    exports of the same runs are the same set and a label's runs name the set they ran."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["agentledger.regression_set/1"] = SET_FORMAT
    set_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    tenant: str = Field(min_length=1, max_length=128)
    workflow: str = Field(min_length=1, max_length=128)
    created_at: datetime
    source: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case]


def set_id_of(cases: list[dict[str, Any]]) -> str:
    """The hash of the cases' identity (run, input hash), order included."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(f"{case['run_id']}\n{case['inputs_hash']}\n".encode())
    return digest.hexdigest()[:16]


def parse_set(text: str, source: str = "set") -> RegressionSet:
    """A set file's contents, or :class:`SetError` naming the field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SetError(f"{source}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SET_FORMAT:
        raise SetError(f"{source}: not a regression set (format {SET_FORMAT!r} expected)")
    try:
        found = RegressionSet.model_validate(data)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise SetError(f"{source}: {' '.join(first[:3])}") from None
    if set_id_of([c.model_dump() for c in found.cases]) != found.set_id:
        raise SetError(f"{source}: set_id does not match its cases (edited by hand?)")
    return found


def check_label(label: str) -> str:
    if not re.match(LABEL_PATTERN, label):
        raise SetError(f"label {label!r}: letters, digits and _.+- only, at most 48")
    return label


def run_id_prefix(set_id: str, label: str) -> str:
    """Every run of ``label`` over set ``set_id`` has a run id under this prefix: the ledger
    tells which case a run played, and a label's runs are one range query away."""
    return f"{RUN_ID_PREFIX}:{set_id}:{label}:"


def case_run_id(set_id: str, label: str, case_id: str) -> str:
    return run_id_prefix(set_id, label) + case_id


def release_env(label: str) -> str:
    """The envelope ``env`` a labelled run is recorded under: ``release:<label>``. It keeps
    set runs apart from production (``env=prod``), and the gate's ``release`` cohort
    key selects it."""
    return f"release:{label}"


@dataclass(frozen=True)
class CaseResult:
    outcome: str
    cost_usd: float

    @property
    def ok(self) -> bool:
        return self.outcome == "success"


@dataclass(frozen=True)
class CompareConfig:
    """The regression threshold: fail when the paired success drop is significant at
    ``alpha`` and larger than ``max_drop``; cost beyond ``cost_tolerance`` is marginal."""

    alpha: float = 0.05
    max_drop: float = 0.03
    cost_tolerance: float = 0.10
    min_cases: int = 20


@dataclass
class Comparison:
    verdict: Verdict
    exit_code: int
    reasons: list[str]
    set_id: str
    baseline: str
    candidate: str
    cases: int
    paired: int
    missing_baseline: int
    missing_candidate: int
    baseline_success: float | None = None
    candidate_success: float | None = None
    broken: int = 0
    fixed: int = 0
    success_drop: float | None = None
    mcnemar_p: float | None = None
    baseline_cost: float | None = None
    candidate_cost: float | None = None
    cost_ratio: float | None = None
    cost_p: float | None = None
    broken_cases: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(broken: int, fixed: int) -> float:
    """One-sided exact McNemar: P(at least ``broken`` of the discordant cases went the
    candidate's bad way | each way equally likely). 1.0 with no discordant case."""
    from scipy import stats

    discordant = broken + fixed
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(broken, discordant, 0.5, alternative="greater").pvalue)


def _cost_p(base: list[float], cand: list[float]) -> float:
    from scipy import stats

    diffs = [c - b for b, c in zip(base, cand, strict=True)]
    if sum(1 for d in diffs if d != 0) < 2:
        return 1.0
    return float(stats.wilcoxon(cand, base, alternative="greater",
                                zero_method="wilcox").pvalue)


def compare(regression_set: RegressionSet, baseline_label: str,
            baseline: Mapping[str, CaseResult], candidate_label: str,
            candidate: Mapping[str, CaseResult],
            config: CompareConfig | None = None) -> Comparison:
    """The candidate label's outcomes against the baseline label's, case by case."""
    config = config or CompareConfig()
    ids = [c.case_id for c in regression_set.cases]
    paired = [i for i in ids if i in baseline and i in candidate]
    result = Comparison("pass", 0, [], regression_set.set_id, baseline_label, candidate_label,
                        len(ids), len(paired), sum(i not in baseline for i in ids),
                        sum(i not in candidate for i in ids), config=asdict(config))
    if len(paired) < config.min_cases:
        result.verdict = "insufficient_data"
        result.reasons = [f"{len(paired)} cases ran under both labels "
                          f"(min_cases {config.min_cases})"]
        result.exit_code = EXIT_CODES[result.verdict]
        return result
    n = len(paired)
    broken = [i for i in paired if baseline[i].ok and not candidate[i].ok]
    fixed = [i for i in paired if candidate[i].ok and not baseline[i].ok]
    result.broken, result.fixed, result.broken_cases = len(broken), len(fixed), broken[:50]
    result.baseline_success = sum(baseline[i].ok for i in paired) / n
    result.candidate_success = sum(candidate[i].ok for i in paired) / n
    result.success_drop = (len(broken) - len(fixed)) / n
    result.mcnemar_p = mcnemar_exact(len(broken), len(fixed))
    base_costs = [baseline[i].cost_usd for i in paired]
    cand_costs = [candidate[i].cost_usd for i in paired]
    result.baseline_cost, result.candidate_cost = sum(base_costs), sum(cand_costs)
    if result.baseline_cost > 0:
        result.cost_ratio = result.candidate_cost / result.baseline_cost
    result.cost_p = _cost_p(base_costs, cand_costs)
    if result.mcnemar_p <= config.alpha and result.success_drop > config.max_drop:
        result.verdict = "fail"
        result.reasons.append(
            f"success worse: {result.candidate_success:.1%} vs {result.baseline_success:.1%} "
            f"on {n} paired cases ({len(broken)} broken, {len(fixed)} fixed; McNemar exact "
            f"p {result.mcnemar_p:.2g}; max_drop {config.max_drop:g})")
    costlier = (result.cost_ratio is not None and result.cost_p <= config.alpha
                and result.cost_ratio - 1 > config.cost_tolerance)
    if costlier:
        result.reasons.append(
            f"cost worse: {result.candidate_cost:.6g} vs {result.baseline_cost:.6g} USD "
            f"(x{result.cost_ratio:.3g}; Wilcoxon signed-rank p {result.cost_p:.2g}; "
            f"tolerance {config.cost_tolerance:g})")
        if result.verdict == "pass":
            result.verdict = "marginal"
    result.exit_code = EXIT_CODES[result.verdict]
    return result
