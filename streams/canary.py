"""The canary: a candidate agent version's live success rate against its baseline's,
with a sequential test that stays valid however often it looks.

Why a sequential test: the control loop looks after every finished run. A fixed-sample
test (the release gate's Fisher test) repeated at every look would, sooner or later, flag
a healthy version by chance alone; its error rate holds for one look. Here the evidence is
a *mixture sequential probability ratio* (mSPRT: Robbins 1970; Johari, Koomen, Pekelis and
Walsh, "Always valid inference", Operations Research 2022, the test behind Optimizely's
Stats Engine), a nonnegative martingale under "no difference": by Ville's inequality it
ever reaches ``1/alpha`` with probability at most ``alpha``, at whatever times one looks.

The math, written out here because no maintained Python library fits (``confseq`` gives
boundaries for one stream of bounded values, not this two-stream comparison with a
one-sided mixture, and ships a C++ build; scipy gives the normal CDF used below):

- ``theta_hat = p_baseline - p_candidate - margin`` is the observed drop beyond the
  margin, with variance ``V`` under the null taken from the pooled rate
  ``p (1 - p) (1/n_b + 1/n_c)`` (the normal approximation of a difference of proportions);
- the likelihood ratio of a drop ``theta`` against none is
  ``exp((theta theta_hat - theta**2 / 2) / V)``; mixed over a half-normal prior on
  ``theta > 0`` with scale ``tau`` (``mixture_sd``, the size of drop it is tuned to find),
  it is ``Lambda = 2 Phi(m / s) sqrt(V / (V + tau**2)) exp(tau**2 theta_hat**2 /
  (2 V (V + tau**2)))`` with ``s**2 = V tau**2 / (V + tau**2)``, ``m = tau**2 theta_hat /
  (V + tau**2)``;
- the candidate is degraded once ``Lambda >= 1 / alpha`` with at least ``min_runs`` in each
  arm. One-sided: a better candidate is never "worse".

The validity is asymptotic (normal approximation, plug-in variance); ``bench/bench_gate.py``
measures the real chance of degrading a healthy candidate when looking after every run,
and how many runs a 10-point drop takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import log_ndtr

from agentledger.schemas.signals import control_key, version_scope
from agentledger.streams.breaker import Transition

RULE = "canary"


@dataclass
class Counts:
    runs: int = 0
    successes: int = 0

    def add(self, success: bool) -> None:
        self.runs += 1
        self.successes += success

    @property
    def rate(self) -> float:
        return self.successes / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Evidence:
    """One look: both rates, the drop, its null variance and the log of the mixture
    likelihood ratio, against the threshold ``log(1/alpha)``."""

    baseline_runs: int
    baseline_success: float
    candidate_runs: int
    candidate_success: float
    drop: float
    variance: float
    log_lr: float
    threshold: float

    @property
    def likelihood_ratio(self) -> float:
        return math.exp(min(self.log_lr, 700.0))

    def as_dict(self) -> dict[str, Any]:
        return {"baseline_runs": self.baseline_runs,
                "baseline_success": round(self.baseline_success, 6),
                "candidate_runs": self.candidate_runs,
                "candidate_success": round(self.candidate_success, 6),
                "drop": round(self.drop, 6), "variance": self.variance,
                "log_likelihood_ratio": round(self.log_lr, 4),
                "likelihood_ratio": round(self.likelihood_ratio, 4),
                "threshold_log": round(self.threshold, 4)}


def log_mixture_lr(drop: float, variance: float, tau: float) -> float:
    """log Lambda for an observed drop (beyond the margin) with null variance ``variance``,
    half-normal mixture of scale ``tau`` over drops > 0 (see the module doc)."""
    if variance <= 0:
        return 0.0
    t2 = tau * tau
    total = variance + t2
    s = math.sqrt(variance * t2 / total)
    m = t2 * drop / total
    return (math.log(2.0) + float(log_ndtr(m / s)) + 0.5 * math.log(variance / total)
            + t2 * drop * drop / (2.0 * variance * total))


def evidence(base: Counts, cand: Counts, *, tau: float, margin: float, alpha: float
             ) -> Evidence:
    """The mSPRT statistic for "the candidate succeeds less than the baseline by more than
    ``margin``" after ``base`` and ``cand``."""
    threshold = math.log(1.0 / alpha)
    if base.runs == 0 or cand.runs == 0:
        return Evidence(base.runs, base.rate, cand.runs, cand.rate, 0.0, 0.0, 0.0, threshold)
    pooled = (base.successes + cand.successes) / (base.runs + cand.runs)
    # a pooled rate of 0 or 1 has no variance to speak of: half a run of each outcome
    pooled = min(max(pooled, 0.5 / (base.runs + cand.runs)),
                 1 - 0.5 / (base.runs + cand.runs))
    variance = pooled * (1 - pooled) * (1 / base.runs + 1 / cand.runs)
    drop = base.rate - cand.rate
    log_lr = log_mixture_lr(drop - margin, variance, tau)
    return Evidence(base.runs, base.rate, cand.runs, cand.rate, drop, variance, log_lr,
                    threshold)


@dataclass
class Candidate:
    """One candidate version under watch: its baseline version and both arms' runs since
    it first ran (the baseline's runs counted from then on, so both arms share a period)."""

    baseline: str
    base: Counts
    cand: Counts
    state: str = "normal"
    version: int = 0
    started: float = 0.0
    last: Evidence | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "base": [self.base.runs, self.base.successes],
                "cand": [self.cand.runs, self.cand.successes], "state": self.state,
                "version": self.version, "started": self.started}

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> Candidate:
        return cls(str(snap["baseline"]), Counts(*snap["base"]), Counts(*snap["cand"]),
                   str(snap["state"]), int(snap["version"]), float(snap["started"]))


@dataclass(frozen=True)
class Degrade:
    """A candidate to degrade now, and the look that decided it."""

    tenant: str
    agent: str
    version: str
    candidate: Candidate
    evidence: Evidence
    ts: float


class Canaries:
    """Every agent's versions, and a :class:`Candidate` for each version that appeared
    after another one was running. The *baseline* of a new version is the agent's version
    with the most finished runs at that moment (the incumbent). A degraded version stays
    degraded (it is a release to roll back, not a tool to wait for): the operator's
    override of the agent, or a new version, ends it."""

    def __init__(self, *, alpha: float, mixture_sd: float, margin: float, min_runs: int,
                 state: str):
        self.alpha, self.tau, self.margin, self.min_runs = alpha, mixture_sd, margin, min_runs
        self.degraded_state = state
        self.totals: dict[tuple[str, str], dict[str, Counts]] = {}
        self.candidates: dict[tuple[str, str, str], Candidate] = {}
        self.by_agent: dict[tuple[str, str], list[Candidate]] = {}
        """Each agent's candidates: a finished run touches only its own agent's."""
        self.new: list[tuple[str, str, str]] = []
        """Candidates created since the caller last took them (to persist)."""

    def finished(self, tenant: str, agent: str, version: str, success: bool, ts: float
                 ) -> Degrade | None:
        """One finished run of ``agent`` at ``version``: count it in its arm(s); a
        :class:`Degrade` when this look makes its version's evidence conclusive."""
        if not version:
            return None
        versions = self.totals.setdefault((tenant, agent), {})
        mine = versions.get(version)
        if mine is None:
            others = [(c.runs, v) for v, c in versions.items()]
            if others:  # a new version beside a running one: a candidate
                self._add(tenant, agent, version,
                          Candidate(max(others)[1], Counts(), Counts(), started=ts))
                self.new.append((tenant, agent, version))
            mine = versions[version] = Counts()
        mine.add(success)
        for other in self.by_agent.get((tenant, agent), ()):
            if other.baseline == version:
                other.base.add(success)
        cand = self.candidates.get((tenant, agent, version))
        if cand is None:
            return None
        cand.cand.add(success)
        if cand.state != "normal" or min(cand.cand.runs, cand.base.runs) < self.min_runs:
            return None
        look = evidence(cand.base, cand.cand, tau=self.tau, margin=self.margin,
                        alpha=self.alpha)
        cand.last = look
        if look.log_lr < look.threshold:
            return None
        cand.state = self.degraded_state
        cand.version += 1
        return Degrade(tenant, agent, version, cand, look, ts)

    def look(self, tenant: str, agent: str, version: str, success: bool, ts: float
             ) -> tuple[tuple[str, Transition] | None, list[tuple[str, dict[str, Any]]]]:
        """:meth:`finished`, as the control loop publishes it: the (scope, transition) of a
        version to degrade — safe mode on ``tenant/agent/version/<v>``, rule ``canary``,
        the numbers in its reason and details — and the (key, snapshot) records to persist
        (a new candidate, so its baseline survives a restart; a degraded one)."""
        found = self.finished(tenant, agent, version, success, ts)
        keys, self.new = self.new, []
        if found is not None:
            keys.append((found.tenant, found.agent, found.version))
        records = [self._record(*key) for key in keys]
        if found is None:
            return None, records
        look, cand = found.evidence, found.candidate
        reason = (f"canary: {found.version} succeeded {look.candidate_success:.1%} of "
                  f"{look.candidate_runs} runs against baseline {cand.baseline} "
                  f"{look.baseline_success:.1%} of {look.baseline_runs} (drop "
                  f"{100 * look.drop:.1f} points); mSPRT likelihood ratio "
                  f"{look.likelihood_ratio:.4g} >= 1/alpha {1 / self.alpha:.4g} (alpha "
                  f"{self.alpha:g}, mixture_sd {self.tau:g}, margin {self.margin:g})")
        details = {"test": "msprt_half_normal", "baseline_version": cand.baseline,
                   "candidate_version": found.version, "alpha": self.alpha,
                   "mixture_sd": self.tau, "margin": self.margin, **look.as_dict()}
        moved = Transition("normal", cand.state, cand.version, found.ts, reason,
                           details=tuple(details.items()))
        return (version_scope(tenant, agent, found.version), moved), records

    def _record(self, tenant: str, agent: str, version: str) -> tuple[str, dict[str, Any]]:
        cand = self.candidates[(tenant, agent, version)]
        key = control_key("safe_mode", version_scope(tenant, agent, version), RULE)
        return key, cand.snapshot() | {"tenant": tenant, "agent": agent, "version": version,
                                       "rule": RULE, "canary": True}

    def restore(self, tenant: str, agent: str, version: str, snap: dict[str, Any]) -> None:
        """A persisted candidate after a restart. Its counts start again from zero (a new
        test from here is as valid as the old one), its baseline and state are kept, and
        both versions are known again, so neither is taken for a new one."""
        cand = Candidate.restore(snap)
        cand.base, cand.cand = Counts(), Counts()
        self._add(tenant, agent, version, cand)
        versions = self.totals.setdefault((tenant, agent), {})
        for known in (cand.baseline, version):
            versions.setdefault(known, Counts())

    def _add(self, tenant: str, agent: str, version: str, cand: Candidate) -> None:
        old = self.candidates.get((tenant, agent, version))
        mine = self.by_agent.setdefault((tenant, agent), [])
        if old is not None:
            mine.remove(old)
        self.candidates[(tenant, agent, version)] = cand
        mine.append(cand)

    def forget(self, tenants: set[str]) -> None:
        self.totals = {k: v for k, v in self.totals.items() if k[0] not in tenants}
        self.candidates = {k: v for k, v in self.candidates.items() if k[0] not in tenants}
        self.by_agent = {k: v for k, v in self.by_agent.items() if k[0] not in tenants}
