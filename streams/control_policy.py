"""The control policy: a versioned YAML file, validated before a worker starts.

A broken policy must never half-apply: :func:`load_policy` refuses the whole file and
names the line and the reason, and the worker does not start. Every signal carries the
policy ``version`` that produced it, so an incident review can tell which rules were live.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Windows(_Policy):
    """Windows are read in each agent's own event time (see ``streams/clocks.py``)."""

    window_s: int = Field(60, ge=5, le=3600, description="sliding window length")
    hop_s: int = Field(5, ge=1, le=600, description="hop (bucket) length")
    allowed_lateness_s: int = Field(
        300, ge=0, le=86400, description="an event this far behind its agent's clock still "
        "lands in its own bucket; further behind it is counted at arrival and in late_events")
    rejoin_after_events: int = Field(
        20, ge=2, le=100_000, description="events far behind an agent's clock, none on time "
        "in between, after which its clock is taken to have moved back (re-anchored)")
    rejoin_after_s: float = Field(
        2.0, ge=0, le=3600, description="... and for at least this long (arrival time): a "
        "partition catching up delivers its backlog in one burst, a clock that moved back "
        "keeps sending")

    @model_validator(mode="after")
    def _hop_divides_window(self) -> Windows:
        if self.window_s % self.hop_s:
            raise ValueError("window_s must be a multiple of hop_s")
        return self


class BreakerPolicy(_Policy):
    """resilience4j semantics: CLOSED → OPEN at ``failure_rate_threshold`` over the window
    with at least ``min_calls``; OPEN for ``wait_s`` → HALF_OPEN. Half-open decides with a
    sequential probability ratio test on the probe results, after at least
    ``probe_calls`` of them: CLOSED once they are evidence (at ``probe_confidence``) that
    the tool fails at ``recovered_below`` rather than at the threshold, OPEN again once
    they are evidence of the reverse, or after ``max_probe_calls`` undecided."""

    failure_rate_threshold: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(20, ge=1)
    wait_s: float = Field(30, gt=0)
    probe_calls: int = Field(5, ge=1)
    recovered_below: float = Field(0.1, gt=0, lt=1)
    probe_confidence: float = Field(0.999, ge=0.5, lt=1)
    max_probe_calls: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _recovered_below_threshold(self) -> BreakerPolicy:
        if self.recovered_below >= self.failure_rate_threshold:
            raise ValueError("recovered_below must be lower than failure_rate_threshold")
        if self.max_probe_calls < self.probe_calls:
            raise ValueError("max_probe_calls must be at least probe_calls")
        return self


class RuleCondition(_Policy):
    """Enter when the failures in the window are significant evidence of an error rate
    above ``tool_error_rate_gt``: an exact one-sided binomial test at ``confidence``
    (``P(this many failures | rate = threshold) <= 1 - confidence``). With
    ``long_window_s`` the same test also runs over that longer window, which then needs the
    short window failing too, at the rule's ``exit_confidence`` (the agent is failing
    *now*). With ``tenant_window_s`` it also runs, per tool, over that window of every
    agent of the tenant calling the tool, for an agent whose own results on it over that
    window are failing at ``exit_confidence``; leaving then also needs the tenant's window
    of each tool the agent called lately to be no evidence of a rate over ``exit_below``."""

    tool_error_rate_gt: float = Field(gt=0, lt=1)
    min_calls: int = Field(5, ge=1)
    confidence: float = Field(0.9999, ge=0.5, lt=1)
    long_window_s: int = Field(0, ge=0, le=86400)
    tenant_window_s: int = Field(0, ge=0, le=3600)

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 12)


class SafeModeRule(_Policy):
    """Enter on significant evidence of an error rate over the threshold (``when``); leave
    once the window is no longer evidence (at ``exit_confidence``) of a rate over
    ``exit_below`` *and* ``min_hold_s`` has passed (hysteresis)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    when: RuleCondition
    action: Literal["degrade_to_read_only", "halt"] = "degrade_to_read_only"
    exit_below: float | None = Field(None, ge=0, lt=1)
    exit_confidence: float = Field(0.95, ge=0.5, lt=1)
    min_hold_s: float = Field(60, ge=0)

    @property
    def exit_alpha(self) -> float:
        return round(1 - self.exit_confidence, 12)

    @property
    def exit_threshold(self) -> float:
        return self.exit_below if self.exit_below is not None else self.when.tool_error_rate_gt / 2

    @model_validator(mode="after")
    def _exit_below_enter(self) -> SafeModeRule:
        if self.exit_below is not None and self.exit_below >= self.when.tool_error_rate_gt:
            raise ValueError("exit_below must be lower than when.tool_error_rate_gt (hysteresis)")
        return self

    def check_windows(self, windows: Windows) -> None:
        if self.when.long_window_s and (self.when.long_window_s % windows.hop_s
                                        or self.when.long_window_s <= windows.window_s):
            raise ValueError(f"safe_mode rule {self.name}: when.long_window_s must be a "
                             "multiple of windows.hop_s and longer than windows.window_s")
        if self.when.tenant_window_s and (self.when.tenant_window_s % windows.hop_s
                                          or self.when.tenant_window_s > windows.window_s):
            raise ValueError(f"safe_mode rule {self.name}: when.tenant_window_s must be a "
                             "multiple of windows.hop_s and at most windows.window_s")


class CanaryPolicy(_Policy):
    """A new agent version's live success rate against its baseline's (the version with
    the most runs when it appeared), after every finished run, with an always-valid
    sequential test (mSPRT, :mod:`agentledger.streams.canary`): the version is degraded
    once the evidence of a drop reaches ``1/alpha``; a healthy version is degraded with
    probability about ``alpha`` however long it runs."""

    enabled: bool = True
    alpha: float = Field(0.005, gt=0, lt=0.5)
    mixture_sd: float = Field(0.07, gt=0, le=1, description="the drop in success rate "
                              "the test is tuned to find fastest (half-normal mixture scale)")
    margin: float = Field(0.0, ge=0, lt=1, description="a drop up to this is tolerated")
    min_runs: int = Field(30, ge=1, description="runs in each arm before any decision")
    action: Literal["degrade_to_read_only", "halt"] = "degrade_to_read_only"


class BudgetPolicy(_Policy):
    fallback: Literal["ask_user_to_confirm", "abort_run", "degrade_to_read_only"] = (
        "ask_user_to_confirm")


class EconomicsPolicy(_Policy):
    window_s: int = Field(60, ge=5, le=86400, description="tumbling window for unit economics")


ToolCatalogue = dict[str, dict[str, Literal["read", "write"]]]


class Policy(_Policy):
    version: str = Field(min_length=1, max_length=64)
    tool_catalogue: ToolCatalogue = Field(
        default_factory=dict, description="tenant -> tool -> read|write; used by OTel "
        "intake, accepted and ignored by the decisions")
    windows: Windows = Windows()
    breaker: BreakerPolicy = BreakerPolicy()
    safe_mode: list[SafeModeRule] = Field(default_factory=list)
    canary: CanaryPolicy = CanaryPolicy()
    budgets: BudgetPolicy = BudgetPolicy()
    economics: EconomicsPolicy = EconomicsPolicy()

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Policy:
        names = [rule.name for rule in self.safe_mode]
        if len(names) != len(set(names)):
            raise ValueError("safe_mode rule names must be unique")
        for rule in self.safe_mode:
            rule.check_windows(self.windows)
        return self

    @property
    def keep_s(self) -> float:
        """How long decision buckets are kept: the longest window plus allowed lateness."""
        longest = max([self.windows.window_s, *(r.when.long_window_s for r in self.safe_mode)])
        return longest + self.windows.allowed_lateness_s


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, line and reason."""


def _node_at(node: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML; raise :class:`PolicyError` naming ``source:line`` and why."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{source}{line}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or root is None:
        raise PolicyError(f"{source}:1: a policy is a mapping with at least 'version'")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        node = _node_at(root, tuple(err["loc"]))
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise PolicyError(
            f"{source}:{node.start_mark.line + 1}: {where}: {err['msg']}") from None


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at ``path``, or the packaged default policy when ``path`` is None."""
    if path is None:
        text = resources.files("agentledger.streams").joinpath("default_policy.yaml").read_text()
        return parse_policy(text, "default_policy.yaml")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.strerror}") from None
    return parse_policy(text, str(p))
