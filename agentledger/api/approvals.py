"""The approval queue over HTTP: list requests, approve or deny them, gating metrics.

Requests are read from the ledger (``approval.requested`` events, tenant-scoped like every
read). An approval id means its *first* stored request
(:func:`agentledger.queries.approvals.requests`): a later ``approval.requested`` with the
same id — another tenant's, another agent's — is refused (never listed, never voted on) and
counted as ``refused_requests`` in ``GET /v1/approvals/stats``. A vote is checked against
that first request here — the key covers its tenant, holds its queue's approver role, does
not act for its agent, has not voted on it before, and it is neither decided nor expired —
then the request's new state is published to the
compacted ``agent.approvals`` topic, where the waiting agent picks it up. Dual control is
the count of *distinct* approving keys reaching the policy's number.

Every state published is signed with the ledger's key (``core/signing.py``), and the desk
follows the topic verifying with that key: a state produced there by anyone else is
neither obeyed by agents nor taken as the base of the next vote (the desk's refusals are
in ``GET /v1/approvals/stats`` as ``refused_states``). Votes shown with a request are
those of a state bound to that very request (tenant, agent, run), so an approver never
sees another tenant's votes.

Votes are serialised by a lock in this process; run one API that takes votes (other API
replicas may serve reads).
"""

import asyncio
import contextlib
import datetime as dt
import threading
import time
from typing import Annotated, Any, Literal

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agentledger.api.deps import Store, Who
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import Principal
from agentledger.core import signing
from agentledger.queries import approvals as q
from agentledger.queries.common import NotFound, Scope, parse_time
from agentledger.schemas.approvals import (
    APPROVALS_TOPIC,
    APPROVED,
    EXPIRED,
    PENDING,
    REJECTED,
    ApprovalState,
    Assignment,
    Vote,
)

ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$"

router = APIRouter(default_response_class=OrjsonResponse, tags=["approvals"])


class VoteRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=2048, description="why; kept with the vote")


class AssignRequest(BaseModel):
    """Hand a pending request on: to another queue (reassign) or to a named approver
    (delegate). Exactly one of the two."""

    to_role: str | None = Field(default=None, pattern=ID, description="reassign to this queue")
    to_approver: str | None = Field(default=None, min_length=1, max_length=128,
                                    description="delegate to this key name")
    reason: str = Field(min_length=1, max_length=2048, description="why; kept with the request")


class ApprovalDesk:
    """Publishes approval states and follows them back (to see other processes' votes)."""

    def __init__(self, bootstrap: str, security: dict[str, str] | None = None,
                 key: signing.LedgerKey | None = None,
                 trusted: signing.Keyring | None = None):
        """``key`` signs what this desk publishes; it follows the topic trusting ``key``
        and ``trusted`` (the keys rotated out, whose states may still be current)."""
        from confluent_kafka import Producer

        from agentledger.core.kafka import client_config
        from agentledger.producers.approval_follower import ApprovalFollower

        self.key = key or signing.LedgerKey.generate()
        ring = signing.Keyring(dict(trusted.keys) if trusted else {})
        ring.add(self.key.public)
        self.follower = ApprovalFollower(bootstrap, security=security, trusted=ring).start()
        # Votes cast before this process started must be known before it takes new ones.
        if not self.follower.wait_caught_up(15):
            raise HTTPException(503, "could not read the approvals topic within 15s")
        self._producer = Producer(client_config(bootstrap, "producer", extra=security))
        self.lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> "ApprovalDesk":
        from agentledger.core import discovery
        from agentledger.core.settings import load_settings

        settings = load_settings()
        bootstrap = discovery.bootstrap_servers(settings)
        if not bootstrap:
            raise HTTPException(503, "no Kafka broker known to this API: approvals need one")
        return cls(bootstrap, settings.kafka_security, signing.ledger_key(settings),
                   signing.local_keyring(signing.key_dir(settings)))

    def publish(self, state: ApprovalState) -> ApprovalState:
        """Sign ``state``, publish it and wait for Kafka's acknowledgement; the signed state."""
        value = signing.sign_json(self.key, signing.APPROVAL, state.to_json())
        self._producer.produce(APPROVALS_TOPIC, value, state.approval_id.encode())
        if self._producer.flush(15):
            raise HTTPException(503, "Kafka did not acknowledge the vote within 15s")
        self.follower.apply(value)
        return ApprovalState.from_json(value)

    def close(self) -> None:
        self.follower.close()


def _desk(request: Request) -> ApprovalDesk:
    app = request.app
    with _DESK_LOCK:
        if getattr(app.state, "approvals", None) is None:
            app.state.approvals = ApprovalDesk.from_settings()
    desk: ApprovalDesk = app.state.approvals
    return desk


_DESK_LOCK = threading.Lock()


def approval_desk(request: Request) -> ApprovalDesk:
    """The app's desk (made on first use: blocks until the approvals topic is read), for
    ``POST /v1/gate/check``, which redeems approvals against the states it follows."""
    return _desk(request)


def _warm_desk(request: Request) -> None:
    """Start following the approvals topic in the background, so lists show votes in
    progress once it is read; reads never wait for (or need) Kafka."""
    app = request.app
    with _DESK_LOCK:
        if getattr(app.state, "approvals", None) is not None or \
                getattr(app.state, "approvals_warming", False):
            return
        app.state.approvals_warming = True

    def warm() -> None:
        with contextlib.suppress(Exception):
            _desk(request)
        app.state.approvals_warming = False

    threading.Thread(target=warm, name="approvals-desk", daemon=True).start()


def _status(row: dict[str, Any], state: ApprovalState | None, now: dt.datetime) -> str:
    if row["resolution"]:
        return str(row["resolution"])
    if state is not None and state.final:
        return state.status
    if row["expires_in_s"] and now > row["requested_at"] + dt.timedelta(
            seconds=row["expires_in_s"]):
        return EXPIRED
    return PENDING


def _bound(row: dict[str, Any], state: ApprovalState | None) -> ApprovalState | None:
    """``state`` if it is the state of the request in ``row`` (same id, tenant, agent and
    run), else None: a state bound to anything else is never shown or built on."""
    if state is None or (state.approval_id, state.tenant, state.agent, state.run_id) != \
            (row["approval_id"], row["tenant"], row["agent"], row["run_id"]):
        return None
    return state


def _view(row: dict[str, Any], state: ApprovalState | None, now: dt.datetime) -> dict[str, Any]:
    state = _bound(row, state)
    age = (now - row["requested_at"]).total_seconds()
    status = _status(row, state, now)
    waited = row["latency_ms"] / 1000 if row["latency_ms"] is not None else age
    return {**row, "status": status, "requested_queue": row["queue"],
            "queue": state.queue if state else row["queue"],
            "assignments": [a.model_dump() for a in state.assignments] if state else [],
            "delegates": state.delegates if state else [],
            "votes": [v.model_dump() for v in state.votes] if state else [],
            "approved_by": state.approvers if state else row["approvers"],
            "age_s": round(age, 3),
            "sla_breached": bool(row["sla_s"]) and (status == EXPIRED or waited > row["sla_s"])}


def _vote(client: Client, request: Request, who: Principal, approval_id: str,
          decision: Literal["approve", "deny"], reason: str) -> Any:
    """Check one vote, then publish the request's new state (see the module doc)."""
    row = q.request(client, Scope(who.tenants), approval_id)
    now = dt.datetime.now(dt.UTC)
    _may_decide(who, row, _bound(row, _state_of(request, approval_id)))
    desk = _desk(request)
    with desk.lock:
        state = _current(desk, row, approval_id)
        _may_decide(who, row, state)  # again: a reassignment may have landed meanwhile
        status = _status(row, state, now)
        if status != PENDING:
            raise HTTPException(409, f"approval {approval_id} is {status} already")
        if any(v.approver == who.name for v in state.votes):
            raise HTTPException(409, f"key {who.name!r} has voted on {approval_id} "
                                     "already: dual control needs a different approver")
        votes = [*state.votes, Vote(approver=who.name, decision=decision, reason=reason,
                                    ts=now)]
        new = state.model_copy(update={"votes": votes, "version": state.version + 1})
        if decision == "deny":
            new = new.model_copy(update={"status": REJECTED, "resolved_at": now})
        elif len(new.approvers) >= new.approvals_required:
            new = new.model_copy(update={"status": APPROVED, "resolved_at": now})
        new = desk.publish(new)
    return _view(row, new, now)


def _may_decide(who: Principal, row: dict[str, Any], state: ApprovalState | None) -> None:
    """403 unless ``who`` holds the request's current queue (after reassignments) or was
    delegated it, and does not act for the request's agent."""
    queue = state.queue if state else row["queue"]
    if queue not in who.roles and not (state and who.name in state.delegates):
        raise HTTPException(403, f"key {who.name!r} is not an approver of queue {queue!r}")
    if row["agent"] in who.agents or f"{row['tenant']}/{row['agent']}" in who.agents:
        raise HTTPException(403, f"key {who.name!r} acts for agent {row['agent']!r}: "
                                 "it cannot approve its own agent's request")


def _current(desk: ApprovalDesk, row: dict[str, Any], approval_id: str) -> ApprovalState:
    """The request's state on the topic, or its first state (call with the desk's lock)."""
    found = desk.follower.get(approval_id)
    if found is not None and _bound(row, found) is None:
        raise HTTPException(409, f"approval {approval_id} has a state for another request "
                                 "(tenant, agent or run): refusing to vote on it")
    return found or ApprovalState(
        approval_id=approval_id, tenant=row["tenant"], agent=row["agent"],
        run_id=row["run_id"], action=row["action"], approver_role=row["queue"],
        approvals_required=max(1, int(row["approvals_required"] or 1)),
        requested_at=row["requested_at"])


def assign(client: Client, request: Request, who: Principal, approval_id: str,
           body: AssignRequest) -> Any:
    """Reassign a pending request to another queue or delegate it to a named approver,
    recorded in its signed state (``assignments``). Only someone who may decide it now
    may hand it on; votes already cast stay and still count."""
    if (body.to_role is None) == (body.to_approver is None):
        raise HTTPException(422, "give exactly one of to_role (reassign) or to_approver "
                                 "(delegate)")
    row = q.request(client, Scope(who.tenants), approval_id)
    now = dt.datetime.now(dt.UTC)
    _may_decide(who, row, _bound(row, _state_of(request, approval_id)))
    desk = _desk(request)
    with desk.lock:
        state = _current(desk, row, approval_id)
        _may_decide(who, row, state)
        status = _status(row, state, now)
        if status != PENDING:
            raise HTTPException(409, f"approval {approval_id} is {status} already")
        if body.to_approver is not None and body.to_approver == who.name:
            raise HTTPException(409, "delegating a request to yourself changes nothing")
        handed = Assignment(by=who.name, to_role=body.to_role, to_approver=body.to_approver,
                            reason=body.reason, ts=now)
        new = desk.publish(state.model_copy(update={
            "assignments": [*state.assignments, handed], "version": state.version + 1}))
    return _view(row, new, now)


def views(request: Request, who: Principal, client: Client, *, tenant: str | None = None,
          queue: str | None = None, since: dt.datetime | None = None,
          limit: int = 200) -> list[dict[str, Any]]:
    """Requests in ``who``'s tenants with their live state, newest first: what
    ``GET /v1/approvals`` lists and the console's inbox shows."""
    _warm_desk(request)
    now = dt.datetime.now(dt.UTC)
    found = q.requests(client, Scope(who.tenants), tenant=tenant, queue=queue, since=since,
                       limit=limit)
    return [_view(r, _state_of(request, r["approval_id"]), now) for r in found]


def vote(client: Client, request: Request, who: Principal, approval_id: str,
         decision: Literal["approve", "deny"], reason: str) -> Any:
    """One vote, checked and published (the JSON routes and the console share it)."""
    return _vote(client, request, who, approval_id, decision, reason)


def _state_of(request: Request, approval_id: str) -> ApprovalState | None:
    desk = getattr(request.app.state, "approvals", None)
    return desk.follower.get(approval_id) if desk is not None else None


@router.get("/v1/approvals",
            summary="approval requests, newest first, with their status and votes")
def list_approvals(
    request: Request, who: Who, client: Store,
    status: Literal["pending", "approved", "rejected", "expired"] | None = None,
    tenant: Annotated[str | None, Query(pattern=ID)] = None,
    queue: Annotated[str | None, Query(pattern=ID)] = None,
    since: Annotated[str | None, Query(max_length=64)] = "7d",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Any:
    found = views(request, who, client, tenant=tenant, queue=queue, since=parse_time(since),
                  limit=limit)
    return {"approvals": [v for v in found if status is None or v["status"] == status]}


@router.get("/v1/approvals/stats",
            summary="block, escalation and override rates, approval latency, SLA")
def approval_stats(
    request: Request, who: Who, client: Store, by: Literal["tenant", "agent", "tool"] = "tenant",
    since: Annotated[str | None, Query(max_length=64)] = "7d",
    until: Annotated[str | None, Query(max_length=64)] = None,
    tenant: Annotated[str | None, Query(pattern=ID)] = None,
) -> Any:
    found = q.stats(client, Scope(who.tenants), by, parse_time(since), parse_time(until),
                    tenant=tenant)
    desk = getattr(request.app.state, "approvals", None)
    # refused_requests: later approval.requested rows reusing an id (in the caller's
    # tenants); refused_states: approval states on the topic not signed by this ledger
    found["refused_requests"] = q.refused_requests(
        client, Scope(who.tenants).narrow(tenant), parse_time(since), parse_time(until))
    found["refused_states"] = desk.follower.refused \
        if desk is not None and who.tenants is None else None  # topic-wide: operators only
    return found


MAX_WAIT_S = 60.0
"""The longest ``?wait=`` a caller may ask: one request holds no more than this."""


@router.get("/v1/approvals/{approval_id}",
            summary="one approval request; ?wait=N long-polls up to N s for its decision")
async def get_approval(request: Request, who: Who, client: Store,
                       approval_id: Annotated[str, Path(pattern=ID)],
                       wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0) -> Any:
    """With ``wait``, answers as soon as the request is decided (or expires), else when
    the wait ends, still pending: how an agent in any language waits for its approvers
    (the agent's key reads its own tenant's requests). A request this process's
    ``POST /v1/gate/check`` just made may not have reached the store yet: that is waited
    for too; an unknown id is a 404 at once."""
    _warm_desk(request)
    deadline = time.monotonic() + wait
    while True:
        try:
            row = await run_in_threadpool(q.request, client, Scope(who.tenants), approval_id)
            break
        except NotFound:
            # only a request this process's gate check just made is worth waiting for
            # (it is on its way to the store); any other id is a 404 at once
            gate = getattr(request.app.state, "tool_gate", None)
            if gate is None or not gate.asked(approval_id) or \
                    time.monotonic() + 0.25 > deadline or await request.is_disconnected():
                raise
            await asyncio.sleep(0.25)  # the sink lands the request: look again shortly
    while True:
        now = dt.datetime.now(dt.UTC)
        state = _state_of(request, approval_id)
        if _status(row, _bound(row, state), now) != PENDING or \
                time.monotonic() >= deadline or await request.is_disconnected():
            return _view(row, state, now)
        await asyncio.sleep(0.05)  # the desk's follower is in memory: a cheap look


@router.post("/v1/approvals/{approval_id}/approve",
             summary="approve (needs the queue's approver role)")
def approve(request: Request, who: Who, client: Store, body: VoteRequest,
            approval_id: Annotated[str, Path(pattern=ID)]) -> Any:
    return _vote(client, request, who, approval_id, "approve", body.reason)


@router.post("/v1/approvals/{approval_id}/deny",
             summary="deny (one denial rejects the request)")
def deny(request: Request, who: Who, client: Store, body: VoteRequest,
         approval_id: Annotated[str, Path(pattern=ID)]) -> Any:
    return _vote(client, request, who, approval_id, "deny", body.reason)


@router.post("/v1/approvals/{approval_id}/assign",
             summary="reassign to another queue (to_role) or delegate to an approver "
                     "(to_approver), recorded with the request")
def assign_approval(request: Request, who: Who, client: Store, body: AssignRequest,
                    approval_id: Annotated[str, Path(pattern=ID)]) -> Any:
    return assign(client, request, who, approval_id, body)
