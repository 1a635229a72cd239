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
    window_s: int = Field(60, ge=5, le=3600, description="sliding window length")
    hop_s: int = Field(5, ge=1, le=600, description="hop (bucket) length")

    @model_validator(mode="after")
    def _hop_divides_window(self) -> Windows:
        if self.window_s % self.hop_s:
            raise ValueError("window_s must be a multiple of hop_s")
        return self


class BreakerPolicy(_Policy):
    """resilience4j semantics: CLOSED → OPEN at ``failure_rate_threshold`` over the window
    with at least ``min_calls``; OPEN for ``wait_s`` → HALF_OPEN; ``probe_calls`` results
    decide CLOSED (rate below threshold) or OPEN again."""

    failure_rate_threshold: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(20, ge=1)
    wait_s: float = Field(30, gt=0)
    probe_calls: int = Field(5, ge=1)


class RuleCondition(_Policy):
    tool_error_rate_gt: float = Field(gt=0, lt=1)
    min_calls: int = Field(20, ge=1)


class SafeModeRule(_Policy):
    """Enter when the agent's tool error rate over the window exceeds the threshold; leave
    only once it is at most ``exit_below`` *and* ``min_hold_s`` has passed (hysteresis)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    when: RuleCondition
    action: Literal["degrade_to_read_only", "halt"] = "degrade_to_read_only"
    exit_below: float | None = Field(None, ge=0, lt=1)
    min_hold_s: float = Field(60, ge=0)

    @property
    def exit_threshold(self) -> float:
        return self.exit_below if self.exit_below is not None else self.when.tool_error_rate_gt / 2

    @model_validator(mode="after")
    def _exit_below_enter(self) -> SafeModeRule:
        if self.exit_below is not None and self.exit_below >= self.when.tool_error_rate_gt:
            raise ValueError("exit_below must be lower than when.tool_error_rate_gt (hysteresis)")
        return self


class BudgetPolicy(_Policy):
    fallback: Literal["ask_user_to_confirm", "abort_run", "degrade_to_read_only"] = (
        "ask_user_to_confirm")


class EconomicsPolicy(_Policy):
    window_s: int = Field(60, ge=5, le=86400, description="tumbling window for unit economics")


class Policy(_Policy):
    version: str = Field(min_length=1, max_length=64)
    windows: Windows = Windows()
    breaker: BreakerPolicy = BreakerPolicy()
    safe_mode: list[SafeModeRule] = Field(default_factory=list)
    budgets: BudgetPolicy = BudgetPolicy()
    economics: EconomicsPolicy = EconomicsPolicy()

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Policy:
        names = [rule.name for rule in self.safe_mode]
        if len(names) != len(set(names)):
            raise ValueError("safe_mode rule names must be unique")
        return self


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
        text = resources.files("streams").joinpath("default_policy.yaml").read_text()
        return parse_policy(text, "default_policy.yaml")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.strerror}") from None
    return parse_policy(text, str(p))
