"""A scripted agent for the regression-set tests: ``agentledger regression run --agent
tests.shell.regression_agent:<name>``. Inputs are ``{"ticket": n}`` (the resolver reads
them back from the case's ``input_ref`` ``ticket:<n>``)."""

from __future__ import annotations

from typing import Any


def resolve(case: dict[str, Any]) -> dict[str, int]:
    return {"ticket": int(case["input_ref"].split(":", 1)[1])}


def _work(inputs: dict[str, int], run: Any) -> None:
    run.model_call(provider="openai", model="gpt-4o-mini", model_version="2024-07-18",
                   role="executor", tokens_in=100, tokens_out=20, latency_ms=5.0,
                   cost_usd=0.001)


def good(inputs: dict[str, int], run: Any) -> str:
    _work(inputs, run)
    return "success"


def breaks_a_tenth(inputs: dict[str, int], run: Any) -> bool:
    """Fails every tenth ticket (10 % of the cases)."""
    _work(inputs, run)
    if inputs["ticket"] % 10 == 0:
        raise RuntimeError("the new prompt loses the customer's account id")
    return True
