"""Enforcement in the SDK: every tool call passes the control loop and the policy first.

``ToolGuard.call(run, tool, action, ...)`` is ``run.tool_call(...)`` with a gate in front:

1. the control loop (:class:`~agentledger.producers.guard.SafeModeGuard`, if given): breakers, safe
   mode, overrides, budgets — a refusal is recorded by the guard and raised;
2. the policy (:class:`~agentledger.producers.gate.Gate`, in process) on the redacted arguments:
   *deny* is recorded as ``policy.decision`` and raised as :class:`ToolDenied` before the
   tool is touched; *escalate* is recorded, followed by ``approval.requested``, and the
   call waits for the approvers (see :mod:`agentledger.schemas.approvals`); *allow* returns the
   tool-call context (allows of high-risk and money actions are recorded too, so an
   auditor sees which rule let a refund through).

Waiting is bounded: after ``wait_s`` without a decision :class:`ApprovalPending` carries
the approval id, and :meth:`ToolGuard.resume` picks the same request up later. An approval
that outlives its queue's expiry is recorded ``expired`` and ends as the queue says:
``abort`` finishes the run aborted, ``deny`` refuses the call and lets the run go on.

Before the policy, arguments are validated against the JSON Schema the catalog declares for
the action (``schema``): invalid ones are refused with rule ``schema`` (recorded as a
``policy.decision`` deny), the reason naming each field, before the tool is touched.

When the control loop refuses with fallback ``ask_user_to_confirm`` (a run over its
budget) and the run acts for an end user (``on_behalf_of``), the call is not refused
outright: an approval is requested in that user's queue (``user:<on_behalf_of>``, one vote,
expiry from the catalog's ``confirm`` section) and the call waits for it like an
escalation. Confirmed, the call goes on to the policy; declined, the call is refused
(``user_declined``) and the run finishes ``aborted`` (see
:mod:`agentledger.producers.user_confirm`).

A call that goes ahead carries the catalog's controls (timeout, retries, backoff: see
:mod:`agentledger.producers.controls`) on its :class:`ToolCallContext`; run the tool with
``ctx.invoke(fn, read_back=...)`` or :meth:`ToolGuard.invoke`. A write that may be retried
and has no idempotency key gets one minted here (after the policy decided on the
caller's), so every attempt carries the same key.

The catalog's mode of an action always wins over the mode the caller declares: a refund
called ``mode="read"`` is a write. If the policy could not be loaded the guard fails closed
for writes (reads go on) and says why in every refusal; the mode then still comes from a
catalog, never from the caller: the policy directory's own ``catalog.yaml`` if it alone
still loads, else the packaged default catalog, and an action neither knows is taken for a
write (refused), as a loaded policy refuses an action its catalog does not list (see
:mod:`agentledger.producers.policy_loading`). The exceptions a refused or waiting call
raises live in :mod:`agentledger.producers.refusals`; all of these names are importable
from here as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from agentledger.core.ids import uuid7
from agentledger.producers.controls import ToolControls
from agentledger.producers.gate import GUARD_POLICY_ID, Decision, Gate, PolicyError
from agentledger.producers.policy_loading import (
    POLICY_UNAVAILABLE,
    decide_call,
    load_gate,
    modes_without_policy,
)
from agentledger.producers.refusals import ApprovalExpired, ApprovalPending, ToolDenied
from agentledger.producers.user_confirm import (
    ASK_USER,
    DEFAULT_CONFIRM,
    USER_DECLINED,
    confirm_decision,
    user_queue,
)
from agentledger.schemas.approvals import APPROVED, REJECTED

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agentledger.producers.approval_follower import ApprovalFollower
    from agentledger.producers.context import RunContext, ToolCallContext

__all__ = ["ASK_USER", "DEFAULT_CONFIRM", "POLICY_UNAVAILABLE", "RECORD_ALLOW_RISKS",
           "USER_DECLINED", "ApprovalExpired", "ApprovalPending", "ControlLoop",
           "ControlVerdict", "ToolDenied", "ToolGuard", "decide_call", "load_gate",
           "modes_without_policy"]

RECORD_ALLOW_RISKS = frozenset({"high", "money"})
T = TypeVar("T")


class ControlVerdict(Protocol):
    """The control loop's answer (a :class:`agentledger.producers.guard.Verdict`)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def rule(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def policy_version(self) -> str: ...


class ControlLoop(Protocol):
    """What a :class:`ToolGuard` asks of the control loop: a
    :class:`agentledger.producers.guard.SafeModeGuard`, which builds its ToolGuard itself."""

    def check(self, tool: str, mode: Literal["read", "write"], *,
              run: RunContext | None = None, action: str = "") -> ControlVerdict: ...


@dataclass
class _Waiting:
    run: RunContext
    tool: str
    action: str
    mode: str
    args: dict[str, Any]
    kwargs: dict[str, Any]
    decision: Decision
    requested_at: datetime
    confirm: bool = False
    """An end user's confirmation (``ask_user_to_confirm``), not the policy's approvers."""


class ToolGuard:
    """Policy + control loop + approvals for one agent (tenant, agent)."""

    def __init__(self, gate: Gate | PolicyError, *, control: ControlLoop | None = None,
                 approvals: ApprovalFollower | None = None):
        self.gate = gate
        self.control = control
        self.approvals = approvals
        self.waiting: dict[str, _Waiting] = {}
        self.denials: dict[str, int] = {}
        self._modes = modes_without_policy(gate) if isinstance(gate, PolicyError) else {}

    def mode_of(self, tool: str, action: str, declared: str) -> str:
        """The mode the guard enforces: the catalog's, never the caller's ``declared`` one
        for a known action; without a loaded policy an unknown action is a write."""
        if isinstance(self.gate, Gate):
            return self.gate.mode_of(tool, action) or declared
        return self._modes.get(f"{tool}:{action}", "write")

    def decide(self, run: RunContext, tool: str, action: str, args: Mapping[str, Any],
               idempotency_key: str | None, resource_tenant: str | None = None,
               approvals: int = 0) -> Decision:
        """The policy's answer for this run's agent, on redacted arguments."""
        ident = run.ledger.identity
        return decide_call(self.gate, tenant=ident.tenant, agent=ident.agent, tool=tool,
                           action=action, args=run.ledger.redactor.redact(dict(args)),
                           idempotency_key=idempotency_key, resource_tenant=resource_tenant,
                           approvals=approvals)

    def preflight(self, *, tenant: str, agent: str, tool: str, action: str, mode: str,
                  args: Mapping[str, Any], idempotency_key: str | None = None,
                  resource_tenant: str | None = None, control: ControlVerdict | None = None,
                  approvals: int = 0, validate_args: bool = False) -> tuple[str, Decision]:
        """The enforced mode and the decision :meth:`call` would reach, without a run:
        nothing recorded, nothing waited for. ``control`` is the control loop's verdict
        for that mode (a refusal wins, as in :meth:`call`); ``args`` must be redacted
        already; ``approvals`` counts distinct approvers of this very call. Used by
        ``POST /v1/gate/check``, so an agent in any language gets the SDK's answer from
        the same code. ``validate_args``: check ``args`` against the action's JSON Schema
        first (a ``schema`` deny), as :meth:`call` does."""
        mode = self.mode_of(tool, action, mode)
        if control is not None and not control.allowed:
            return mode, Decision("deny", control.rule, control.reason, GUARD_POLICY_ID,
                                  control.policy_version or "control")
        if isinstance(self.gate, PolicyError) and mode != "write":
            return mode, Decision("allow", POLICY_UNAVAILABLE,
                                  f"policy not loaded: {self.gate}; reads go on",
                                  "unloaded", "unloaded")
        invalid = self.schema_check(tool, action, args) if validate_args else None
        if invalid is not None:
            return mode, invalid
        return mode, decide_call(self.gate, tenant=tenant, agent=agent, tool=tool,
                                 action=action, args=args, idempotency_key=idempotency_key,
                                 resource_tenant=resource_tenant, approvals=approvals)

    def records_allow(self, tool: str, action: str) -> bool:
        """Whether an allow of this action is recorded (high-risk and money actions)."""
        gate = self.gate if isinstance(self.gate, Gate) else None
        return gate is not None and gate.risk_of(tool, action) in RECORD_ALLOW_RISKS

    def call(self, run: RunContext, tool: str, action: str, *, mode: str,
             args: Mapping[str, Any], idempotency_key: str | None = None,
             resource_tenant: str | None = None, wait_s: float = 0.0,
             **kwargs: Any) -> ToolCallContext:
        """The tool-call context if the call may go ahead now; raises otherwise. The
        catalog's mode of the action wins over ``mode`` (a write called "read" is a write),
        with or without a loaded policy (see :meth:`mode_of`)."""
        mode = self.mode_of(tool, action, mode)
        if self.control is not None:
            verdict = self.control.check(tool, mode, run=run, action=action)  # type: ignore[arg-type]
            if not verdict.allowed:
                if getattr(verdict, "fallback", "") == ASK_USER and \
                        self.user_queue(run) is not None and self.approvals is not None:
                    return self._ask_user(run, tool, action, mode, args, verdict,
                                          {"idempotency_key": idempotency_key,
                                           "resource_tenant": resource_tenant, **kwargs},
                                          wait_s)
                raise ToolDenied(verdict.rule, verdict.reason)
        return self._gated(run, tool, action, mode, args, idempotency_key, resource_tenant,
                           wait_s, kwargs)

    def invoke(self, run: RunContext, tool: str, action: str,
               fn: Callable[[ToolCallContext], T], *, mode: str, args: Mapping[str, Any],
               read_back: Callable[[Any], Any] | None = None, **kwargs: Any) -> T:
        """Gate the call (:meth:`call`, same keywords), then run ``fn(ctx)`` under the
        catalog's controls (:meth:`ToolCallContext.invoke`: timeout, retries, read-back);
        ``fn``'s value. ``ctx.idempotency_key`` is the key every attempt must send."""
        with self.call(run, tool, action, mode=mode, args=args, **kwargs) as ctx:
            return ctx.invoke(fn, ctx, read_back=read_back)

    def schema_check(self, tool: str, action: str, args: Mapping[str, Any]
                     ) -> Decision | None:
        """The ``schema`` deny for arguments that break the action's declared JSON Schema
        (None when they hold, no schema is declared, or no policy is loaded)."""
        return self.gate.schema_deny(tool, action, args) if isinstance(self.gate, Gate) \
            else None

    def _gated(self, run: RunContext, tool: str, action: str, mode: str,
               args: Mapping[str, Any], idempotency_key: str | None,
               resource_tenant: str | None, wait_s: float, kwargs: dict[str, Any]
               ) -> ToolCallContext:
        """:meth:`call` after the control loop: schema, policy, approvals."""
        if isinstance(self.gate, PolicyError) and mode != "write":
            return self._open(run, tool, action, mode, args, idempotency_key, kwargs)
        invalid = self.schema_check(tool, action, args)
        if invalid is not None:
            self._record(run, invalid, tool, action)
            self.denials[invalid.rule] = self.denials.get(invalid.rule, 0) + 1
            raise ToolDenied(invalid.rule, invalid.reason, invalid)
        decision = self.decide(run, tool, action, args, idempotency_key, resource_tenant)
        if decision.decision == "deny":
            self._record(run, decision, tool, action)
            self.denials[decision.rule] = self.denials.get(decision.rule, 0) + 1
            raise ToolDenied(decision.rule, decision.reason, decision)
        if decision.decision == "escalate":
            approval_id = self.request(run, decision, tool, action, args)
            self.waiting[approval_id] = _Waiting(
                run, tool, action, mode, dict(args),
                {"idempotency_key": idempotency_key, "resource_tenant": resource_tenant,
                 **kwargs}, decision, run.ledger.clock())
            return self.resume(run, approval_id, wait_s=wait_s)
        if self.records_allow(tool, action):
            self._record(run, decision, tool, action)
        return self._open(run, tool, action, mode, args, idempotency_key, kwargs)

    def user_queue(self, run: RunContext) -> str | None:
        """The queue of the end user ``run`` acts for (``user:<on_behalf_of>``), or None
        when it acts for nobody (or a name no queue can carry)."""
        return user_queue(run)

    def _ask_user(self, run: RunContext, tool: str, action: str, mode: str,
                  args: Mapping[str, Any], verdict: ControlVerdict, kwargs: dict[str, Any],
                  wait_s: float) -> ToolCallContext:
        """Ask the run's end user to confirm what the control loop refused, then wait."""
        decision = confirm_decision(self.gate, run, rule=verdict.rule,
                                    reason=verdict.reason,
                                    policy_version=verdict.policy_version)
        approval_id = self.request(run, decision, tool, action, args)
        self.waiting[approval_id] = _Waiting(run, tool, action, mode, dict(args), kwargs,
                                             decision, run.ledger.clock(), confirm=True)
        return self.resume(run, approval_id, wait_s=wait_s)

    def request(self, run: RunContext, decision: Decision, tool: str, action: str,
                args: Mapping[str, Any]) -> str:
        """Record the escalation and the approval request on the run; the approval id."""
        self._record(run, decision, tool, action)
        approval_id = uuid7()
        queue = decision.queue
        run.emit("approval.requested", {
            "approver": decision.approver_role, "action": f"{tool}:{action}",
            "reason": decision.reason or None, "approval_id": approval_id,
            "approvals_required": decision.approvals_required,
            "sla_s": queue.sla_s if queue else None,
            "expires_in_s": queue.expires_in_s if queue else None,
            "args": run.ledger.redactor.redact(dict(args))})
        return approval_id

    def resume(self, run: RunContext, approval_id: str, *, wait_s: float = 0.0
               ) -> ToolCallContext:
        """Wait up to ``wait_s`` for the approvers of ``approval_id``; then go ahead,
        refuse, expire, or raise :class:`ApprovalPending` to be resumed again later."""
        pending = self.waiting.get(approval_id)
        if pending is None or pending.run is not run:
            raise KeyError(f"no approval {approval_id} waiting on this run")
        queue = pending.decision.queue
        expires = pending.requested_at.timestamp() + (queue.expires_in_s if queue else 0)
        follower = self.approvals
        state = None
        if follower is not None:
            # only a decision of this very request counts (approval id, tenant, agent, run,
            # decided before expiry): see ApprovalState.decides
            ident = run.ledger.identity
            expires_at = datetime.fromtimestamp(expires, UTC) if queue else None

            def decided() -> Any:
                found = follower.get(approval_id)
                ok = found is not None and found.decides(
                    approval_id=approval_id, tenant=ident.tenant, agent=ident.agent,
                    run_id=run.run_id, expires_at=expires_at)
                return found if ok else None

            budget = max(0.0, min(wait_s, expires - time.time()))
            follower.wait_for(lambda: decided() is not None, budget)
            state = decided()
        if state is not None and state.final and state.status in (APPROVED, REJECTED):
            return self._resolved(approval_id, pending, state)
        if time.time() >= expires:
            return self._expire(approval_id, pending)
        raise ApprovalPending(approval_id, state.status if state else "pending")

    def _resolved(self, approval_id: str, pending: _Waiting, state: Any) -> ToolCallContext:
        run = pending.run
        approvers = state.approvers if state.status == APPROVED else \
            [v.approver for v in state.votes if v.decision == "deny"][:1]
        resolved_at = state.resolved_at or datetime.now(UTC)
        latency = max(0.0, (resolved_at - pending.requested_at).total_seconds() * 1000)
        deny_reasons = [v.reason for v in state.votes if v.decision == "deny"]
        run.emit("approval.resolved", {
            "approver": "+".join(approvers)[:128] or pending.decision.approver_role,
            "decision": state.status, "latency_ms": round(latency, 3),
            "approval_id": approval_id, "approvers": approvers,
            "reason": deny_reasons[0] if deny_reasons else None})
        del self.waiting[approval_id]
        kw = dict(pending.kwargs)
        key, tenant = kw.pop("idempotency_key"), kw.pop("resource_tenant")
        if pending.confirm:
            if state.status == REJECTED:
                reason = f"{run.on_behalf_of} declined {pending.tool}:{pending.action} " \
                         f"(approval {approval_id})"
                run.finish("aborted", error=reason)
                raise ToolDenied(USER_DECLINED, reason)
            # confirmed: the control loop's refusal is waived for this call; the policy
            # (and its own approvers, if it escalates) still decides
            return self._gated(run, pending.tool, pending.action, pending.mode, pending.args,
                               key, tenant, 0.0, kw)
        if state.status == REJECTED:
            raise ToolDenied("approval_rejected", f"approval {approval_id} was denied")
        after = self.decide(run, pending.tool, pending.action, pending.args, key, tenant,
                            approvals=len(approvers))
        if not after.allowed:
            self._record(run, after, pending.tool, pending.action)
            raise ToolDenied(after.rule, after.reason, after)
        return self._open(run, pending.tool, pending.action, pending.mode, pending.args,
                          key, kw)

    def _expire(self, approval_id: str, pending: _Waiting) -> ToolCallContext:
        run = pending.run
        queue = pending.decision.queue
        latency = (datetime.now(UTC) - pending.requested_at).total_seconds() * 1000
        run.emit("approval.resolved", {
            "approver": pending.decision.approver_role or "nobody", "decision": "expired",
            "latency_ms": round(max(0.0, latency), 3), "approval_id": approval_id,
            "approvers": [],
            "reason": f"nobody decided within {queue.expires_in_s if queue else 0:g}s"})
        del self.waiting[approval_id]
        outcome = "denied"
        if queue is not None and queue.on_expiry == "abort":
            run.finish("aborted", error=f"approval {approval_id} expired")
            outcome = "aborted"
        raise ApprovalExpired(approval_id, outcome)

    @staticmethod
    def _record(run: RunContext, decision: Decision, tool: str, action: str) -> None:
        run.emit("policy.decision", {
            "policy_id": decision.policy_id, "policy_version": decision.policy_version,
            "rule": decision.rule, "decision": decision.decision,
            "action": f"{tool}:{action}", "reason": decision.reason[:4096] or None})

    def _open(self, run: RunContext, tool: str, action: str, mode: str,
              args: Mapping[str, Any], idempotency_key: str | None, kwargs: dict[str, Any]
              ) -> ToolCallContext:
        extra = {k: v for k, v in kwargs.items() if k in ("tool_version", "schema")}
        controls: ToolControls | None = None
        if isinstance(self.gate, Gate):
            controls = self.gate.controls_of(tool, action)
            if extra.get("schema") is None and (declared := self.gate.schema_of(tool, action)):
                extra["schema"] = declared  # the hash then names the schema enforced
        if controls is not None and controls.retries and mode == "write" \
                and idempotency_key is None:
            idempotency_key = uuid7()  # one key for every attempt of this write
        return run.tool_call(tool, action, mode=mode, args=args,
                             idempotency_key=idempotency_key, controls=controls, **extra)
