"""The fleet simulator: realistic agent runs through the real SDK.

Three workflows, each a plausible shape of production agent work:

- ``ticket_triage``: classify a support ticket, retrieve KB articles, read the ticket,
  set priority (write), summarise.
- ``crm_update``: plan, look up the account, update fields (write), verify by read-back.
- ``refund_with_approval``: check the order, then issue the refund (write) as the tool
  policy says: small refunds go ahead, larger ones wait for two (simulated) finance
  approvers and stop if rejected, the largest are denied outright.

Tool failures happen at ``error_rate`` (or at ``failure_rate(tool, ts)``, for scripted
scenarios); a run whose write fails ends in ``failure``, sometimes with a rollback. With
guards, every tool call asks the agent's :class:`~agentledger.producers.guard.SafeModeGuard` first
and a refused call ends the run ``aborted`` — simulated agents obey the control loop.
Every tool call is also decided by the real tool-gating policy (:mod:`agentledger.producers.gate`,
the packaged default unless another gate is given): denies and escalations are recorded
as ``policy.decision`` exactly as the SDK's :class:`~agentledger.producers.enforce.ToolGuard` does.
Everything is driven by one seeded RNG, so a seed reproduces the same runs (ids and times
aside).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentledger.core.ids import uuid7
from agentledger.producers.context import RunContext
from agentledger.producers.emitter import Ledger
from agentledger.producers.enforce import RECORD_ALLOW_RISKS, ToolDenied, ToolGuard
from agentledger.producers.gate import Decision, Gate
from agentledger.producers.guard import SafeModeGuard
from agentledger.producers.identity import AgentIdentity

TENANTS = ("acme", "globex", "initech")
MODELS = (
    ("openai", "gpt-4o", "2024-08-06"),
    ("openai", "gpt-4o-mini", "2024-07-18"),
    ("anthropic", "claude-sonnet", "4.5"),
    ("anthropic", "claude-haiku", "4.5"),
)
WORKFLOWS = ("ticket_triage", "crm_update", "refund_with_approval")
ERROR_TYPES = ("Timeout", "HTTP500", "RateLimited", "ValidationError")
APPROVERS = ("finance-ana", "finance-ben")
_DEFAULT_GATE: list[Gate] = []


def default_gate() -> Gate:
    """The packaged default policy, loaded once per process."""
    if not _DEFAULT_GATE:
        _DEFAULT_GATE.append(Gate.load())
    return _DEFAULT_GATE[0]


@dataclass
class SimulationResult:
    runs: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "runs": self.runs, "outcomes": self.outcomes}


class ToolFailed(Exception):
    def __init__(self, error_type: str):
        super().__init__(error_type)
        self.error_type = error_type


class NeedsApproval(Exception):
    """The policy escalated the call; the workflow asks its (simulated) approvers."""

    def __init__(self, decision: Decision):
        super().__init__(decision.rule)
        self.decision = decision


class ToolRefused(Exception):
    """The agent's guard refused the call; the run stops (``aborted``)."""

    def __init__(self, rule: str):
        super().__init__(rule)
        self.rule = rule


class Simulator:
    def __init__(self, make_ledger: Callable[[AgentIdentity], Ledger], *, seed: int = 0,
                 error_rate: float = 0.02,
                 failure_rate: Callable[[str, float], float] | None = None,
                 guard_for: Callable[[str, str], SafeModeGuard] | None = None,
                 tenants: tuple[str, ...] = TENANTS, gate: Gate | None = None,
                 use_policy: bool = True, agent_version: str = "1.4.2"):
        self.rng = random.Random(seed)
        self.agent_version = agent_version  # a cohort for the release gate's tests
        self.error_rate = error_rate
        self.failure_rate = failure_rate
        self.tenants = tenants
        self._make_ledger = make_ledger
        self._guard_for = guard_for
        self._guards: dict[tuple[str, str], SafeModeGuard] = {}
        self._ledgers: dict[tuple[str, str], Ledger] = {}
        self.refusals: dict[str, int] = {}
        self.gate = gate or (default_gate() if use_policy else None)
        self.denials: dict[str, int] = {}

    def guard(self, tenant: str, agent: str) -> SafeModeGuard | None:
        if self._guard_for is None:
            return None
        key = (tenant, agent)
        if key not in self._guards:
            self._guards[key] = self._guard_for(tenant, agent)
        return self._guards[key]

    def ledger(self, tenant: str, agent: str) -> Ledger:
        key = (tenant, agent)
        if key not in self._ledgers:
            self._ledgers[key] = self._make_ledger(AgentIdentity(
                tenant=tenant, agent=agent, agent_version=self.agent_version,
                principal=f"svc-{agent}", workspace="default", env="prod"))
        return self._ledgers[key]

    def ledgers(self) -> list[Ledger]:
        return list(self._ledgers.values())

    # -- steps ------------------------------------------------------------------------

    def _model(self, run: RunContext, role: str, big: bool = False) -> None:
        rng = self.rng
        provider, model, version = MODELS[rng.randrange(0, 2) * 2 + (0 if big else 1)]
        tokens_in = rng.randint(400, 3000) if big else rng.randint(200, 1200)
        run.model_call(provider=provider, model=model, model_version=version, role=role,
                       tokens_in=tokens_in, tokens_out=rng.randint(50, 600),
                       cached_tokens=rng.choice((0, 0, tokens_in // 2)),
                       latency_ms=round(rng.uniform(150, 2500), 1))

    def _policy(self, run: RunContext, tool: str, action: str, args: dict[str, Any],
                key: str, approvals: int) -> None:
        """Ask the tool policy; record and raise as the SDK's ToolGuard would."""
        if self.gate is None:
            return
        ident = run.ledger.identity
        decision = self.gate.decide(tenant=ident.tenant, agent=ident.agent, tool=tool,
                                    action=action, args=run.ledger.redactor.redact(args),
                                    idempotency_key=key, approvals=approvals)
        risky = self.gate.risk_of(tool, action) in RECORD_ALLOW_RISKS and not approvals
        if decision.decision != "allow" or risky:
            ToolGuard._record(run, decision, tool, action)
        if decision.decision == "deny":
            self.denials[decision.rule] = self.denials.get(decision.rule, 0) + 1
            raise ToolDenied(decision.rule, decision.reason, decision)
        if decision.decision == "escalate":
            raise NeedsApproval(decision)

    def _tool(self, run: RunContext, tool: str, action: str, mode: str,
              args: dict[str, Any], approvals: int = 0) -> None:
        rng = self.rng
        ident = run.ledger.identity
        guard = self.guard(ident.tenant, ident.agent)
        if guard is not None:
            verdict = guard.check(tool, mode, run=run, action=action)  # type: ignore[arg-type]
            if not verdict.allowed:
                self.refusals[verdict.rule] = self.refusals.get(verdict.rule, 0) + 1
                raise ToolRefused(verdict.rule)
        key = f"{run.run_id}:{tool}:{action}"
        self._policy(run, tool, action, args, key, approvals)
        error_rate = self.error_rate
        if self.failure_rate is not None:
            error_rate = self.failure_rate(tool, run.ledger.clock().timestamp())
        with run.tool_call(tool, action, mode=mode, args=args, tool_version="2.3.1",
                           schema={"tool": tool, "action": action, "v": 2},
                           idempotency_key=key) as call:
            latency = round(rng.lognormvariate(4.5, 0.6), 1)
            if rng.random() < error_rate:
                error_type = rng.choice(ERROR_TYPES)
                status = "timeout" if error_type == "Timeout" else "error"
                call.result(status, error_type=error_type, latency_ms=latency)
                raise ToolFailed(error_type)
            side = {"resource": f"{tool}/{args.get('id', 'x')}", "op": action} if mode == "write" \
                else None
            call.result("ok", latency_ms=latency, side_effect=side,
                        verified=True if mode == "write" else None)

    # -- workflows --------------------------------------------------------------------

    def _ticket_triage(self, run: RunContext, n: int) -> None:
        self._model(run, "classifier")
        run.retrieval(source="kb", index_version="kb-2026-11",
                      documents={f"kb-{self.rng.randint(1, 500)}": f"article {n}-{i}"
                                 for i in range(3)})
        self._tool(run, "zendesk", "get_ticket", "read", {"id": f"T-{n}"})
        self._model(run, "planner", big=True)
        self._tool(run, "zendesk", "set_priority", "write",
                   {"id": f"T-{n}", "priority": self.rng.choice(("low", "normal", "high"))})

    def _crm_update(self, run: RunContext, n: int) -> None:
        self._model(run, "planner", big=True)
        self._tool(run, "salesforce", "get_account", "read",
                   {"id": f"A-{n}", "api_key": "sk-live-0123456789abcdefghij"})
        self._tool(run, "salesforce", "update_account", "write",
                   {"id": f"A-{n}", "fields": {"tier": "gold"}, "password": "hunter2"})
        self._tool(run, "salesforce", "get_account", "read", {"id": f"A-{n}"})

    def _refund(self, run: RunContext, n: int) -> None:
        rng = self.rng
        self._model(run, "planner", big=True)
        self._tool(run, "stripe", "get_charge", "read", {"id": f"ch_{n}"})
        amount = rng.randint(5, 900)
        args = {"id": f"ch_{n}", "amount": amount}
        try:
            self._tool(run, "stripe", "create_refund", "write", args)
        except NeedsApproval as escalated:
            decision = escalated.decision
            approval_id = uuid7()
            queue = decision.queue
            run.emit("approval.requested", {
                "approver": decision.approver_role, "action": "stripe:create_refund",
                "reason": decision.reason or None, "approval_id": approval_id,
                "approvals_required": decision.approvals_required,
                "sla_s": queue.sla_s if queue else None,
                "expires_in_s": queue.expires_in_s if queue else None, "args": args})
            approved = rng.random() < 0.85
            who = list(APPROVERS[:decision.approvals_required]) if approved else [APPROVERS[0]]
            run.emit("approval.resolved", {
                "approver": "+".join(who), "decision": "approved" if approved else "rejected",
                "latency_ms": round(rng.uniform(20_000, 600_000), 0),
                "approval_id": approval_id, "approvers": who,
                "reason": None if approved else "refund not justified"})
            if not approved:
                run.finish("aborted", error="refund not approved")
                return
            self._tool(run, "stripe", "create_refund", "write", args, approvals=len(who))
        self._model(run, "executor")

    # -- driving ----------------------------------------------------------------------

    def one_run(self, n: int) -> str:
        rng = self.rng
        tenant = rng.choice(self.tenants)
        workflow = rng.choice(WORKFLOWS)
        agent = {"ticket_triage": "triage-bot", "crm_update": "crm-agent",
                 "refund_with_approval": "refund-agent"}[workflow]
        ledger = self.ledger(tenant, agent)
        step = {"ticket_triage": self._ticket_triage, "crm_update": self._crm_update,
                "refund_with_approval": self._refund}[workflow]
        with ledger.run(workflow, inputs={"n": n, "tenant": tenant}, input_ref=f"s3://in/{n}",
                        prompt_template=workflow, prompt_version="7",
                        model_config={"temperature": 0.2}, policy_version="12",
                        max_cost_usd=0.25, max_tool_calls=12) as run:
            try:
                step(run, n)
            except ToolRefused as refused:
                run.finish("aborted", error=f"refused by the control loop: {refused.rule}")
            except ToolDenied as denied:
                run.finish("aborted", error=f"denied by policy: {denied.rule}")
            except ToolFailed as failure:
                if rng.random() < 0.2:
                    run.rollback(who=f"svc-{agent}", what="undo partial changes",
                                 why=failure.error_type)
                    run.finish("rolled_back", error=failure.error_type)
                else:
                    run.finish("failure", error=failure.error_type)
        return run.outcome or "unknown"

    def run(self, runs: int, rate: float = 0.0,
            progress: Callable[[int], None] | None = None) -> SimulationResult:
        """Emit ``runs`` runs (at most ``rate`` runs/s when > 0) and wait for delivery."""
        result = SimulationResult()
        delivered_before = sum(ledger.delivered for ledger in self.ledgers())
        start = time.monotonic()
        for n in range(runs):
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            outcome = self.one_run(n)
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
            result.runs += 1
            if progress:
                progress(1)
        for ledger in self.ledgers():
            ledger.flush()
        result.events = sum(ledger.delivered for ledger in self.ledgers()) - delivered_before
        return result
