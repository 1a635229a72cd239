"""Per-run budgets, and the small per-run state the control loop keeps.

A run announces ``budget {max_cost_usd, max_tool_calls}`` in ``run.started``; every
``model.call`` adds its cost and every ``tool.call`` counts. The first event that takes a
run past either limit produces one ``budget.exceeded`` decision for that run and no other;
``exceeded`` is part of the durable state, so a redelivered event or a restarted worker
does not announce it twice. Money is counted in integer micro-dollars, so sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def to_micros(usd: float) -> int:
    return round(usd * 1_000_000)


@dataclass(slots=True)
class RunState:
    tenant: str
    agent: str
    workflow: str
    max_cost_micros: int | None = None
    max_tool_calls: int | None = None
    cost_micros: int = 0
    tool_calls: int = 0
    exceeded: bool = False

    def snapshot(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: this runs per run per batch, and asdict
        # deep-copies (a tenth of the worker's time, measured)
        return {"tenant": self.tenant, "agent": self.agent, "workflow": self.workflow,
                "max_cost_micros": self.max_cost_micros, "max_tool_calls": self.max_tool_calls,
                "cost_micros": self.cost_micros, "tool_calls": self.tool_calls,
                "exceeded": self.exceeded}

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> RunState:
        return cls(**snap)

    def check(self) -> str | None:
        """The reason this run is over budget, once; None if within (or already told)."""
        if self.exceeded:
            return None
        reason = None
        if self.max_cost_micros is not None and self.cost_micros > self.max_cost_micros:
            reason = (f"cost {self.cost_micros / 1e6:.6f} USD > max_cost_usd "
                      f"{self.max_cost_micros / 1e6:g}")
        elif self.max_tool_calls is not None and self.tool_calls > self.max_tool_calls:
            reason = f"tool calls {self.tool_calls} > max_tool_calls {self.max_tool_calls}"
        if reason:
            self.exceeded = True
        return reason
