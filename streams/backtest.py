"""Replay stored tool results through a policy with the worker's own decision code.

The history comes in event-time order (as ``[ts_us, tenant, agent, tool, status,
latency_ms, event_id, error_type]`` rows, paged by the caller); the rows of one tenant
within ``record_s`` of event time make one input record, as a worker would have received
them in a batch. ``run.finished`` rows (tool ``""``, outcome, agent_version) replay the
canary (:mod:`agentledger.streams.canary`). What comes out is every transition the
policy would have made, to be set beside the transitions that were made
(``control_signals``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentledger.schemas.signals import ControlSignal
from agentledger.streams.control_policy import Policy
from agentledger.streams.decide import Controller
from agentledger.streams.facts import Fact, RunFinished, ToolResult


@dataclass
class Backtest:
    policy: Policy
    record_s: float = 1.0
    controller: Controller = field(init=False)
    signals: list[ControlSignal] = field(default_factory=list)
    results: int = 0
    runs_finished: int = 0
    _start: float = 0.0
    _batches: dict[str, list[Fact]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.controller = Controller(self.policy, tool_health=False)

    def feed(self, rows: Iterable[list[Any]]) -> None:
        """Rows in event-time order (one page after another)."""
        batches = self._batches
        for ts_us, tenant, agent, tool, status, latency, event_id, error_type in rows:
            ts = ts_us / 1e6
            if ts - self._start >= self.record_s:
                self._flush()
                self._start = ts
            batch = batches.get(tenant)
            if batch is None:
                batch = batches[tenant] = []
            if tool == "":  # a run.finished row (the canary): outcome, agent_version
                batch.append(RunFinished(ts, agent, "", status, error_type))
                self.runs_finished += 1
            else:
                batch.append(ToolResult(ts, agent, tool, status, latency, event_id,
                                        error_type))
                self.results += 1

    def _flush(self) -> None:
        for tenant, batch in self._batches.items():
            self.signals += self.controller.apply(tenant, batch).signals
        if self._batches:
            self.signals += self.controller.advance().signals
        self._batches.clear()

    def finish(self) -> list[ControlSignal]:
        """Decide the last records; every transition, in the order they were decided."""
        self._flush()
        return self.signals


Transition = tuple[str, str, str, int, str, str]
"""(kind, scope, rule, version, previous state, state): see :func:`transition_key`."""


def transition_key(kind: str, scope: str, rule: str, version: int, previous: str,
                   state: str) -> Transition:
    return (kind, scope, rule, int(version), previous, state)


RESTING = ("CLOSED", "normal")


def compare(would: Iterable[Transition], made: Iterable[Transition]
            ) -> dict[str, list[Transition]]:
    """Transitions both made, only the backtest would make, only the worker made."""
    w, m = list(dict.fromkeys(would)), list(dict.fromkeys(made))
    ws, ms = set(w), set(m)
    return {"same": [t for t in w if t in ms], "only_backtest": [t for t in w if t not in ms],
            "only_made": [t for t in m if t not in ws]}


def episodes(transitions: Iterable[Transition]) -> dict[tuple[str, str, str], list[str]]:
    """Per (kind, scope, rule): the trips and recoveries in order ("tripped:<state>",
    "recovered"), without half-open probe cycles. Probe cycles depend on which results
    reach a half-open breaker first, i.e. on arrival order across partitions, which a
    replay in event-time order cannot know; episodes do not."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for kind, scope, rule, _version, previous, state in transitions:
        if previous in RESTING and state not in RESTING:
            out.setdefault((kind, scope, rule), []).append(f"tripped:{state}")
        elif state in RESTING and previous not in RESTING:
            out.setdefault((kind, scope, rule), []).append("recovered")
    return out
