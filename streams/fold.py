"""Stage one of the control loop: fold raw events by run, route compact facts by tenant.

``agent.events`` is keyed by run_id, which is right for budgets (all of a run's events are
in one partition) and wrong for breakers and safe mode (a tool's results are spread over
every partition). So this stage does only per-run work — budgets, the run's workflow —
and turns each batch of events into one *facts* record per tenant: small tuples holding
just what the decision stage needs. The decision stage reads those keyed by tenant, so
every breaker and safe-mode scope of a tenant is decided by exactly one worker.

Events are parsed with orjson and read defensively, not validated: validation and the DLQ
belong to the sink, and an event the sink would reject is skipped here (and counted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from agentledger.schemas.events import scope_name_error
from agentledger.schemas.signals import EXCEEDED, ControlSignal, run_scope
from agentledger.streams.budgets import RunState, to_micros
from agentledger.streams.control_policy import Policy
from agentledger.streams.facts import (
    ApprovalResolved,
    Fact,
    Override,
    PolicyDecision,
    Rollback,
    RunFinished,
    Spend,
    ToolCall,
    ToolResult,
)


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class FoldOutput:
    facts: dict[str, list[Fact]] = field(default_factory=lambda: defaultdict(list))
    watermark: float = 0.0
    signals: list[ControlSignal] = field(default_factory=list)
    runs_changed: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    skipped: int = 0


class RunFolder:
    """Per-run state for the runs of the partitions this worker owns."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.runs: dict[str, RunState] = {}

    def restore(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for run_id, snap in items:
            self.runs[run_id] = RunState.restore(dict(snap))

    def fold(self, payloads: Iterable[bytes]) -> FoldOutput:
        out = FoldOutput()
        for payload in payloads:
            try:
                self._fold_one(orjson.loads(payload), out)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                out.skipped += 1
        return out

    def _fold_one(self, event: dict[str, Any], out: FoldOutput) -> None:
        etype = event["event_type"]
        body = event["body"]
        run_id = event["run_id"]
        tenant = event["tenant"]
        agent = event["agent"]
        if scope_name_error(tenant) or scope_name_error(agent):
            # The sink refuses it (DLQ); deciding on it would give tenant "acme/eu" a say
            # in the scopes of tenant "acme" (see schemas.events.SCOPE_NAME_PATTERN).
            raise ValueError("tenant or agent name holds a scope separator")
        ts = parse_ts(event["ts"])
        out.watermark = max(out.watermark, ts)
        run = self.runs.get(run_id)
        if etype == "run.started":
            budget = body.get("budget") or {}
            max_cost = budget.get("max_cost_usd")
            run = self.runs[run_id] = RunState(
                tenant, agent, body["workflow"],
                to_micros(max_cost) if max_cost is not None else None,
                budget.get("max_tool_calls"))
            out.runs_changed[run_id] = run.snapshot()
            return
        workflow = run.workflow if run else "unknown"
        facts = out.facts[tenant]
        if etype == "tool.result":
            facts.append(ToolResult(ts, agent, body["tool"], body["status"],
                                    float(body.get("latency_ms") or 0.0), event["event_id"],
                                    body.get("error_type") or ""))
        elif etype == "tool.call":
            facts.append(ToolCall(ts, agent, workflow))
            if run:
                run.tool_calls += 1
                self._check_budget(run_id, run, event, ts, out)
        elif etype == "model.call":
            micros = to_micros(float(body.get("cost_usd") or 0.0))
            facts.append(Spend(ts, agent, workflow, micros))
            if run:
                run.cost_micros += micros
                self._check_budget(run_id, run, event, ts, out)
        elif etype == "run.finished":
            facts.append(RunFinished(ts, agent, workflow, body["outcome"],
                                     str(event.get("agent_version") or "")))
            if self.runs.pop(run_id, None) is not None:
                out.runs_changed[run_id] = None
        elif etype == "policy.decision":
            facts.append(PolicyDecision(ts, agent, workflow, body["decision"]))
        elif etype == "approval.resolved":
            facts.append(ApprovalResolved(ts, agent, workflow,
                                          float(body.get("latency_ms") or 0.0)))
        elif etype == "human.override":
            facts.append(Override(ts, agent, workflow))
        elif etype == "rollback":
            facts.append(Rollback(ts, agent, workflow))
        if not facts:
            del out.facts[tenant]

    def _check_budget(self, run_id: str, run: RunState, event: dict[str, Any], ts: float,
                      out: FoldOutput) -> None:
        out.runs_changed[run_id] = run.snapshot()
        reason = run.check()
        if reason is None:
            return
        out.runs_changed[run_id] = run.snapshot()
        out.signals.append(ControlSignal(
            kind="budget", scope=run_scope(run.tenant, run.agent, run_id), state=EXCEEDED,
            previous_state="within", version=1, ts=datetime.fromtimestamp(ts, UTC),
            reason=reason, policy_version=self.policy.version,
            triggered_by=[event["event_id"]], fallback=self.policy.budgets.fallback,
            details={"run_id": run_id, "workflow": run.workflow,
                     "cost_usd": run.cost_micros / 1e6, "tool_calls": run.tool_calls}))
