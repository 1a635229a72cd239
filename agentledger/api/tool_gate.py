"""``POST /v1/gate/check``: "may this agent do this now?", for an agent in any language.

The SDK's :class:`~agentledger.producers.enforce.ToolGuard` answers that in process; this
route gives the same answer over HTTP, from the same code: the control loop's verdict
(:meth:`agentledger.producers.guard.SafeModeGuard.decide` on the API's one
:class:`~agentledger.producers.guard.ControlFollower`, the one ``GET /v1/control/stream``
fans out) and then the Cedar tool policy (:meth:`ToolGuard.preflight`). One response:
``allow``; ``deny`` with rule and reason; or ``escalate`` with the approval id, queue,
approvals required and SLA, to be long-polled at ``GET /v1/approvals/{id}?wait=30``.
Once approved, the agent asks again with ``approval_id``: as the SDK does, the policy is
asked again told how many distinct approvers approved, and the approval is used up. It
lets go only the call it was asked for (same agent run, tool, action and arguments), and
only in the API process that asked it (votes may go to any).

Who asks is the key's business, never the body's: the key must be bound to exactly one
tenant and one agent (``tenants: [acme]``, ``agents: [refund-agent]``), a body naming
another agent is refused (403), and a key bound to no agent may not call the route.

Run budgets hold for OTel-fed runs too. Once such a run closes, its ``run.started`` carries
the budget its spans declare (``agentledger.budget.*``) and the control loop folds it like
an SDK run's, so the budget signal refuses it here; while it is still open in this
process's OTLP/HTTP intake, the spend of the spans received so far is checked against
that budget on every call (rule ``budget_exceeded``).

Arguments sent with the check (``args`` present in the body) are validated against the
JSON Schema the catalog declares for the action, as the SDK does: invalid ones are a deny
with rule ``schema`` whose reason names each field (the arguments are the agent's redacted
ones, so a schema should not constrain a field the agent redacts). An allow carries the
catalog's agent-side controls for the action (``controls``: ``timeout_s``, ``retries``,
``backoff_s``, ``backoff_max_s``, ``retry_on``) when it declares any, for the agent to
apply: the gate cannot bound or retry a call it does not make.

Decisions are recorded as the SDK records them (a ``policy.decision`` for every deny and
escalation and for allows of high-risk and money actions; an escalation also as
``approval.requested``, so the approvals API lists it and takes votes on it). The
agent's own run may be recorded elsewhere (the OTLP intake, its own chain), so the API
does not append to it: it keeps one *gate run* per agent run (workflow ``http-gate``,
``input_ref`` ``agent-run:<run_id>``, same tenant and agent), a hash chain of its own.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from agentledger import __version__
from agentledger.api.approvals import approval_desk
from agentledger.api.control_stream import hub_of
from agentledger.api.deps import bootstrap_of, presented_key, principal
from agentledger.api.params import ID_PATTERN
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import Principal
from agentledger.core.ids import uuid7
from agentledger.producers.context import RunContext, sha256_json
from agentledger.producers.controls import NO_CONTROLS
from agentledger.producers.emitter import BufferFull, Ledger
from agentledger.producers.enforce import ToolGuard, load_gate
from agentledger.producers.gate import Decision, Gate
from agentledger.producers.guard import ControlFollower, SafeModeGuard, Verdict
from agentledger.producers.identity import AgentIdentity
from agentledger.schemas.approvals import APPROVED, REJECTED, ApprovalState

if TYPE_CHECKING:
    from collections.abc import Callable

    from agentledger.intake.runs import RunSpend

router = APIRouter(default_response_class=OrjsonResponse, tags=["gate"])
GATE_WORKFLOW = "http-gate"
MAX_GATE_RUNS = 10_000
"""Gate runs kept open at once; the least recently used one is finished beyond that."""
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$"
ToolName = Annotated[str, Field(pattern=_NAME)]


class GateCheck(BaseModel):
    """One call the agent is about to make."""

    run_id: Annotated[str, Field(pattern=ID_PATTERN, description="the agent's run id")]
    tool: ToolName
    action: ToolName
    mode: Literal["read", "write"] = Field(
        description="the mode the agent declares; the catalog's mode of the action wins")
    args: dict[str, Any] = Field(default_factory=dict, max_length=256,
                                 description="tool arguments, redacted by the agent; when "
                                 "given, validated against the action's JSON Schema")
    idempotency_key: Annotated[str | None, Field(max_length=256)] = None
    resource_tenant: Annotated[str | None, Field(max_length=128)] = None
    agent: Annotated[str | None, Field(max_length=257, description=(
        "optional: the agent the caller believes it is; must be the key's agent"))] = None
    agent_version: Annotated[str, Field(pattern=_NAME)] = "http"
    approval_id: Annotated[str | None, Field(pattern=ID_PATTERN, description=(
        "after an escalation: the approval this call was granted by (same run, tool, "
        "action and arguments); the policy is asked again with its approvers"))] = None


@dataclass(frozen=True, slots=True)
class _Asked:
    """What an escalation asked approvers for: the only call its approval may let go."""

    key: tuple[str, str, str]
    call: str
    args_hash: str
    gate_run_id: str


def bound_agent(who: Principal, claimed: str | None = None) -> tuple[str, str]:
    """(tenant, agent) the key acts for; 403 naming why when it is not exactly one, or
    when the body claims another agent."""
    if who.tenants is None or len(who.tenants) != 1:
        raise HTTPException(403, f"key {who.name!r} is not bound to exactly one tenant: "
                                 "the gate checks as the one agent a key acts for (bind "
                                 "it with tenants: [<tenant>] and agents: [<agent>])")
    if len(who.agents) != 1:
        raise HTTPException(403, f"key {who.name!r} acts for {len(who.agents) or 'no'} "
                                 "agent(s): the gate needs a key bound to exactly one agent "
                                 "(agents: [<agent>] in its key entry)")
    tenant = next(iter(who.tenants))
    agent = next(iter(who.agents))
    if "/" in agent:
        owner, agent = agent.split("/", 1)
        if owner != tenant:
            raise HTTPException(403, f"key {who.name!r} names agent {owner}/{agent} outside "
                                     f"its tenant {tenant!r}")
    if claimed is not None and claimed not in (agent, f"{tenant}/{agent}"):
        raise HTTPException(403, f"key {who.name!r} acts for agent {tenant}/{agent}: it "
                                 f"cannot check as {claimed[:128]!r}")
    return tenant, agent


def _principal(name: str) -> str:
    """The key's name as an envelope ``principal`` (a Name: no spaces)."""
    return "key:" + re.sub(r"[^A-Za-z0-9_.:@/+-]", "-", name)[:120]


class _AsAgent:
    """The API's one Ledger speaking as one agent: same producer, redactor and clock,
    the agent's identity in every envelope (a :class:`~agentledger.producers.context.
    EventLedger`)."""

    def __init__(self, base: Ledger, identity: AgentIdentity):
        self.identity = identity
        self.clock = base.clock
        self.redactor = base.redactor
        self.prices = base.prices
        self.signing_key = base.signing_key
        self.tracer = base.tracer
        self.check = base.check
        self.send = base.send


class GateService:
    """The policy, the control follower, and the recorder of the gate runs."""

    def __init__(self, bootstrap: str, security: dict[str, str] | None,
                 follower: ControlFollower, *, stale_after_s: float,
                 policy_dir: str | None = None, max_runs: int = MAX_GATE_RUNS,
                 open_spend: Callable[[str, str], RunSpend | None] | None = None):
        self.guard = ToolGuard(load_gate(policy_dir))
        self.open_spend = open_spend
        """(tenant, run id) → an OTel-fed run's spend so far, while it is open here."""
        self.follower = follower
        self.stale_after_s = stale_after_s
        self.max_runs = max_runs
        # a private tracer provider: gate runs get real span ids, and the API process's
        # global provider stays as it was (FastAPI traces each request through it)
        tracer = TracerProvider(resource=Resource.create(
            {"service.name": "agentledger-gate"})).get_tracer("agentledger.gate")
        self.ledger = Ledger.connect(bootstrap, AgentIdentity(
            tenant="agentledger", agent="gate", agent_version=__version__, principal="api"),
            producer_overrides={"extra": security}, tracer=tracer)
        self._runs: OrderedDict[tuple[str, str, str], RunContext] = OrderedDict()
        self._asked: OrderedDict[str, _Asked] = OrderedDict()
        self._lock = threading.Lock()
        self.checks = 0

    def decide(self, tenant: str, agent: str, body: GateCheck, approvals: int = 0
               ) -> tuple[str, Decision]:
        """The enforced mode and the decision (control loop first, then the policy,
        told how many distinct approvers approved this very call)."""
        control = SafeModeGuard(self.follower, tenant, agent,
                                stale_after_s=self.stale_after_s)
        mode = self.guard.mode_of(body.tool, body.action, body.mode)
        verdict = control.decide(body.tool, mode, body.run_id)  # type: ignore[arg-type]
        if verdict.allowed and self.open_spend is not None:
            spend = self.open_spend(tenant, body.run_id)
            over = spend.over() if spend is not None else None
            if over is not None:
                verdict = Verdict(False, "budget_exceeded", over, "stop")
        args = self.ledger.redactor.redact(dict(body.args))
        return self.guard.preflight(tenant=tenant, agent=agent, tool=body.tool,
                                    action=body.action, mode=mode, args=args,
                                    idempotency_key=body.idempotency_key,
                                    resource_tenant=body.resource_tenant, control=verdict,
                                    approvals=approvals,
                                    validate_args="args" in body.model_fields_set)

    def record(self, who: Principal, tenant: str, agent: str, body: GateCheck,
               decision: Decision) -> dict[str, Any]:
        """Record what the SDK would; the escalation's approval fields, if any."""
        extra: dict[str, Any] = {}
        if decision.decision == "allow" and not self.guard.records_allow(body.tool,
                                                                         body.action):
            return extra
        with self._lock:
            run = self._run(who, tenant, agent, body)
            run.emit("policy.decision", {
                "policy_id": decision.policy_id, "policy_version": decision.policy_version,
                "rule": decision.rule, "decision": decision.decision,
                "action": f"{body.tool}:{body.action}",
                "reason": decision.reason[:4096] or None})
            if decision.decision == "escalate":
                queue = decision.queue
                extra = {"approval_id": uuid7(), "queue": decision.approver_role,
                         "approvals_required": decision.approvals_required,
                         "sla_s": queue.sla_s if queue else None,
                         "expires_in_s": queue.expires_in_s if queue else None}
                run.emit("approval.requested", {
                    "approver": decision.approver_role,
                    "action": f"{body.tool}:{body.action}", "reason": decision.reason or None,
                    "approval_id": extra["approval_id"],
                    "approvals_required": decision.approvals_required,
                    "sla_s": extra["sla_s"], "expires_in_s": extra["expires_in_s"],
                    "args": self.ledger.redactor.redact(dict(body.args))})
                extra["gate_run_id"] = run.run_id
                self._asked[extra["approval_id"]] = _Asked(
                    (tenant, agent, body.run_id), f"{body.tool}:{body.action}",
                    self._args_hash(body), run.run_id)
                while len(self._asked) > self.max_runs:
                    self._asked.popitem(last=False)
                extra["poll"] = f"/v1/approvals/{extra['approval_id']}?wait=30"
        return extra

    def asked(self, approval_id: str) -> bool:
        """Whether this process escalated ``approval_id`` and it is not used up yet."""
        return approval_id in self._asked

    def _args_hash(self, body: GateCheck) -> str:
        """What an approval is bound to beside run, tool and action: the redacted
        arguments, the idempotency key and the resource's tenant."""
        return sha256_json({"args": self.ledger.redactor.redact(dict(body.args)),
                            "idempotency_key": body.idempotency_key,
                            "resource_tenant": body.resource_tenant})

    def redeem(self, tenant: str, agent: str, body: GateCheck,
               state: ApprovalState | None) -> int | Decision:
        """The approvers ``body.approval_id`` grants this call (once: it is used up), or
        the deny when it grants nothing: asked for another call, pending, or rejected.
        ``state`` is the ledger's signed state (the approvals desk follows only those)."""
        approval_id = body.approval_id or ""
        with self._lock:
            asked = self._asked.get(approval_id)
            if asked is None or (asked.key, asked.call, asked.args_hash) != \
                    ((tenant, agent, body.run_id), f"{body.tool}:{body.action}",
                     self._args_hash(body)):
                return self._refusal("approval_mismatch", f"approval {approval_id} was not "
                                     "asked for this call (run, tool, action, arguments) here")
            if state is None or not state.decides(
                    approval_id=approval_id, tenant=tenant, agent=agent,
                    run_id=asked.gate_run_id, expires_at=None):
                return self._refusal("approval_pending", f"approval {approval_id} is not "
                                     f"decided: GET /v1/approvals/{approval_id}?wait=30")
            del self._asked[approval_id]
            run = self._runs.get(asked.key)
            if run is not None and run.run_id == asked.gate_run_id:
                resolved = state.resolved_at or datetime.now(UTC)
                run.emit("approval.resolved", {
                    "approver": "+".join(state.approvers)[:128] or state.approver_role,
                    "decision": state.status, "approval_id": approval_id,
                    "latency_ms": round(max(0.0, (resolved - state.requested_at)
                                            .total_seconds() * 1000), 3),
                    "approvers": state.approvers,
                    "reason": next((v.reason for v in state.votes if v.decision == "deny"),
                                   None)})
        if state.status == REJECTED:
            return self._refusal("approval_rejected", f"approval {approval_id} was denied")
        return len(state.approvers) if state.status == APPROVED else 0

    def _refusal(self, rule: str, reason: str) -> Decision:
        gate = self.guard.gate
        version = gate.version if isinstance(gate, Gate) else "unloaded"
        return Decision("deny", rule, reason, "agentledger.approvals", version)

    def _run(self, who: Principal, tenant: str, agent: str, body: GateCheck) -> RunContext:
        """The open gate run of this agent run (called under the lock)."""
        key = (tenant, agent, body.run_id)
        run = self._runs.get(key)
        if run is not None:
            self._runs.move_to_end(key)
            return run
        identity = AgentIdentity(tenant=tenant, agent=agent, agent_version=body.agent_version,
                                 principal=_principal(who.name))
        gate = self.guard.gate
        run = RunContext(_AsAgent(self.ledger, identity), workflow=GATE_WORKFLOW,
                         inputs={"run_id": body.run_id}, input_ref=f"agent-run:{body.run_id}",
                         policy_version=gate.version if isinstance(gate, Gate) else "unloaded")
        run.__enter__()
        self._runs[key] = run
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)[1].__exit__(None, None, None)
        return run

    def close(self) -> None:
        """Finish every open gate run and deliver what was recorded."""
        with self._lock:
            while self._runs:
                self._runs.popitem(last=False)[1].__exit__(None, None, None)
        self.ledger.close(10)


def service_of(app: FastAPI) -> GateService:
    """The app's gate service, made on first use (reads the control topic first)."""
    found: GateService | None = getattr(app.state, "tool_gate", None)
    if found is not None:
        return found
    hub = hub_of(app)  # one ControlFollower per API process, shared with the stream
    with app.state.otlp_lock:
        found = getattr(app.state, "tool_gate", None)
        if found is None:
            settings, bootstrap = bootstrap_of(app)
            found = app.state.tool_gate = GateService(
                bootstrap, settings.kafka_security, hub.follower,
                stale_after_s=settings.gate_stale_after_s,
                open_spend=lambda tenant, run_id: _open_spend(app, tenant, run_id))
        return found


def _open_spend(app: FastAPI, tenant: str, run_id: str) -> RunSpend | None:
    """The spend of an OTel-fed run still open in this process's OTLP/HTTP intake."""
    intake = getattr(app.state, "otlp", None)
    return intake.assembler.spend(tenant, run_id) if intake is not None else None


def stop(app: FastAPI) -> None:
    found: GateService | None = getattr(app.state, "tool_gate", None)
    if found is not None:
        found.close()


def caller(request: Request) -> Principal:
    """:func:`agentledger.api.deps.principal` on the same headers, called inline: no
    dependency chain (each a traced operation) and no thread hop, since the gate has a
    few milliseconds. The route declares the same security schemes for OpenAPI."""
    auth = request.headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials.strip()) \
        if scheme.lower() == "bearer" and credentials.strip() else None
    return principal(request, presented_key(bearer, request.headers.get("x-api-key")))


@router.post("/v1/gate/check", summary="allow, deny or escalate one tool call (any language)",
             openapi_extra={"security": [{"HTTPBearer": []}, {"APIKeyHeader": []}]})
async def gate_check(request: Request, body: GateCheck) -> Any:
    who = caller(request)
    tenant, agent = bound_agent(who, body.agent)
    service: GateService | None = getattr(request.app.state, "tool_gate", None)
    if service is None:
        service = await run_in_threadpool(service_of, request.app)
    desk = None
    if body.approval_id is not None:
        desk = await run_in_threadpool(approval_desk, request)
    try:
        granted: int | Decision = 0
        if desk is not None:
            granted = service.redeem(tenant, agent, body, desk.follower.get(body.approval_id
                                                                            or ""))
        if isinstance(granted, Decision):
            mode, decision = service.guard.mode_of(body.tool, body.action, body.mode), granted
        else:
            mode, decision = service.decide(tenant, agent, body, granted)
        extra = service.record(who, tenant, agent, body, decision)
    except BufferFull as exc:  # an unrecorded decision is no decision: the agent retries
        raise HTTPException(503, f"could not record the decision: {exc}",
                            headers={"Retry-After": "5"}) from None
    service.checks += 1
    gate = service.guard.gate
    controls = gate.controls_of(body.tool, body.action) \
        if decision.decision == "allow" and isinstance(gate, Gate) else None
    if controls is not None and controls != NO_CONTROLS:
        extra["controls"] = controls.as_dict()
    return OrjsonResponse({  # plain JSON types already: no jsonable_encoder pass
        "decision": decision.decision, "rule": decision.rule,
        "reason": decision.reason or None, "policy_id": decision.policy_id,
        "policy_version": decision.policy_version, "mode": mode, "tenant": tenant,
        "agent": agent, "run_id": body.run_id, **extra})
