"""SafeModeGuard: the agent side of the control loop (docs/control-loop.md).

A :class:`ControlFollower` reads the compacted ``agent.control`` topic from the beginning
on a background thread and keeps the newest record per key (a higher ``version`` wins;
equal or older versions — redeliveries — are ignored). A :class:`SafeModeGuard` answers
``check(tool, mode)`` for one agent from that in-memory state: a few dict lookups, no
network call on the agent's hot path.

Fail-closed: if the follower has heard nothing on the control topic (stream workers send
heartbeats every second) for ``stale_after_s``, writes are refused — an agent must not
keep writing while nobody watches. Reads stay allowed unless configured otherwise.
Every refusal made for a run is emitted as a ``policy.decision`` event on that run.

Only the ledger's records count (``core/signing.py``): a follower with a trusted key obeys
only records signed by it; unsigned or forged ones are ignored, counted in
:attr:`ControlFollower.refused` and logged, and do not even count as a sign of life (a
forged heartbeat cannot keep a guard from failing closed). Tombstones are never obeyed —
they carry no value to sign; the ledger retires a scope with a signed record (``CLOSED``,
``normal``, ``cleared``) instead. A manual override's version is wall-clock milliseconds,
so one dated more than :data:`OVERRIDE_MAX_AHEAD_MS` ahead of this machine's clock is
ignored even if signed: no record, forged or mistaken, can pin a scope from the future.

The control loop answers "is this tool healthy and may this agent write now"; the tool
policy answers "may this agent do this at all". :meth:`SafeModeGuard.with_policy` puts both
in front of every tool call (see :mod:`agentledger.producers.enforce`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import orjson
from pydantic import ValidationError

from agentledger.core import signing
from agentledger.core.follower import CompactedFollower
from agentledger.producers.gate import GUARD_POLICY_ID
from agentledger.schemas import topics
from agentledger.schemas.events import scope_name_error
from agentledger.schemas.signals import (
    CLEARED,
    EXCEEDED,
    HALTED,
    NORMAL,
    OPEN,
    READ_ONLY,
    ControlSignal,
    agent_scope,
    breaker_scope,
    control_key,
    run_scope,
    version_scope,
)

if TYPE_CHECKING:
    from agentledger.producers.approval_follower import ApprovalFollower
    from agentledger.producers.context import RunContext
    from agentledger.producers.enforce import ToolGuard
    from agentledger.producers.gate import Gate, PolicyError

log = logging.getLogger(__name__)

Mode = Literal["read", "write"]
OVERRIDE_MAX_AHEAD_MS = 10 * 60 * 1000
"""How far ahead of this machine's clock a manual override's version (wall-clock ms) may
be: clock skew between the operator's machine and the agent's, nothing more."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str = ""
    reason: str = ""
    fallback: str = ""
    policy_version: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Verdict(True)


class ControlFollower(CompactedFollower):
    """Follows ``agent.control`` into memory. One per process is enough for any number of
    guards; it starts reading at offset 0 of every partition (the topic is compacted, so
    that is the current state of every scope, not its history: :mod:`agentledger.core.follower`)."""

    def __init__(self, bootstrap: str, *, security: dict[str, str] | None = None,
                 topic: str = topics.CONTROL, poll_s: float = 0.05,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto"):
        """``trusted``: the ledger keys to verify with (see :class:`CompactedFollower`)."""
        super().__init__(bootstrap, topic, purpose=signing.CONTROL, trusted=trusted,
                         security=security, poll_s=poll_s, name="guard")
        self.state: dict[str, ControlSignal] = {}
        self.heartbeats: dict[str, ControlSignal] = {}
        self.invalid = 0
        self._listeners: list[Callable[[ControlSignal], None]] = []

    def on_signal(self, listener: Callable[[ControlSignal], None]) -> None:
        """Call ``listener`` (on the follower thread) for every new signal."""
        self._listeners.append(listener)

    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record; True if it came from the ledger (verified, or unverified
        when no key is configured), whether or not it changed anything."""
        name = key.decode(errors="replace") if key is not None else ""
        if value is None:
            # a tombstone carries nothing to sign, so it cannot be the ledger's word;
            # retiring a scope is a signed record (see the module doc)
            self.verifier.refuse("tombstone", name)
            return False
        try:
            raw = orjson.loads(value)
            signal = ControlSignal.model_validate(raw)
        except (orjson.JSONDecodeError, ValidationError):
            self.invalid += 1
            return False
        if not self.verifier.admit(raw, signal.key):
            return False
        if signal.kind == "heartbeat":
            self.heartbeats[signal.scope] = signal
            return True
        if signal.kind == "override" and \
                signal.version > time.time_ns() // 1_000_000 + OVERRIDE_MAX_AHEAD_MS:
            self.verifier.refuse("future", signal.key)
            return False
        current = self.state.get(signal.key)
        if current is not None and current.version >= signal.version:
            return True  # a redelivered or stale transition
        self.state[signal.key] = signal
        for listener in self._listeners:
            listener(signal)
        return True

    # -- what the stream workers report --------------------------------------------------

    @property
    def silent_for(self) -> float:
        """Seconds since the last record on the control topic (since start if none)."""
        return time.monotonic() - (self.last_heard or self.started)

    @property
    def event_time(self) -> float:
        """How far (event time, epoch seconds) the stream workers have decided: the
        largest ``event_time`` in any worker heartbeat."""
        return max((float(h.details.get("event_time") or 0.0)
                    for h in self.heartbeats.values()), default=0.0)

    def get(self, kind: str, scope: str, rule: str = "") -> ControlSignal | None:
        return self.state.get(control_key(kind, scope, rule))


class SafeModeGuard:
    """``check(tool, mode)`` for one agent (tenant + agent), from a follower's state.

    Precedence: a manual override of the agent; then staleness (writes only); then the
    tool's breaker; then automatic safe mode; then the run's budget.
    """

    def __init__(self, follower: ControlFollower, tenant: str, agent: str, *,
                 stale_after_s: float = 10.0, fail_closed_reads: bool = False,
                 agent_version: str | None = None):
        """``agent_version``: this process's version, so the canary's safe mode on
        ``tenant/agent/version/<v>`` (a bad release) applies here too."""
        for name in (tenant, agent):  # "acme"/"eu/x" would read tenant "acme/eu"'s scope
            if (error := scope_name_error(name)) is not None:
                raise ValueError(error)
        self.follower = follower
        self.tenant = tenant
        self.agent = agent
        self.scope = agent_scope(tenant, agent)
        self.version_scope = version_scope(tenant, agent, agent_version) \
            if agent_version else None
        self.stale_after_s = stale_after_s
        self.fail_closed_reads = fail_closed_reads
        self.refusals = 0

    @classmethod
    def connect(cls, bootstrap: str, tenant: str, agent: str, **kwargs: float | bool
                ) -> SafeModeGuard:
        """A guard with its own follower (started)."""
        return cls(ControlFollower(bootstrap).start(), tenant, agent, **kwargs)  # type: ignore[arg-type]

    def decide(self, tool: str, mode: Mode, run_id: str | None = None) -> Verdict:
        """The verdict, without emitting anything."""
        f = self.follower
        writes = mode == "write"
        found = f.get("override", self.scope)
        override = found if found is not None and found.state != CLEARED else None
        overridden = override is not None
        if override is not None and (override.state == HALTED
                                     or (override.state == READ_ONLY and writes)):
            return Verdict(False, f"override_{override.state}", override.reason,
                           policy_version=override.policy_version)
        if (writes or self.fail_closed_reads) and f.silent_for > self.stale_after_s:
            return Verdict(False, "control_stale",
                           f"no word from {f.topic} for {f.silent_for:.1f}s "
                           f"(stale_after_s={self.stale_after_s:g}); failing closed")
        breaker = f.get("breaker", breaker_scope(self.tenant, tool))
        if breaker is not None and breaker.state == OPEN:
            return Verdict(False, "breaker_open", breaker.reason,
                           policy_version=breaker.policy_version)
        if not overridden:
            for signal in self._safe_modes():
                if signal.state == HALTED or (signal.state == READ_ONLY and writes):
                    return Verdict(False, f"safe_mode_{signal.state}", signal.reason,
                                   policy_version=signal.policy_version)
        if run_id is not None:
            budget = f.get("budget", run_scope(self.tenant, self.agent, run_id))
            if budget is not None and budget.state == EXCEEDED and \
                    (budget.fallback != "degrade_to_read_only" or writes):
                return Verdict(False, "budget_exceeded", budget.reason, budget.fallback,
                               budget.policy_version)
        return ALLOW

    def _safe_modes(self) -> list[ControlSignal]:
        prefixes = tuple(control_key("safe_mode", scope) + ":"
                         for scope in (self.scope, self.version_scope) if scope)
        return [s for k, s in list(self.follower.state.items())
                if k.startswith(prefixes) and s.state != NORMAL]

    def check(self, tool: str, mode: Mode, *, run: RunContext | None = None,
              action: str = "") -> Verdict:
        """May this agent call ``tool`` in ``mode`` now? A refusal on a run is recorded
        on that run as a ``policy.decision`` (deny) event."""
        verdict = self.decide(tool, mode, run.run_id if run is not None else None)
        if not verdict.allowed:
            self.refusals += 1
            if run is not None:
                run.policy_decision(policy_id=GUARD_POLICY_ID,
                                    policy_version=verdict.policy_version or "control",
                                    rule=verdict.rule, decision="deny",
                                    action=f"{tool}.{action or mode}")
        return verdict

    def with_policy(self, gate: Gate | PolicyError,
                    approvals: ApprovalFollower | None = None) -> ToolGuard:
        """A :class:`~agentledger.producers.enforce.ToolGuard`: this control-loop state, then
        the tool policy (in process), then approvals, before every tool call."""
        from agentledger.producers.enforce import ToolGuard

        return ToolGuard(gate, control=self, approvals=approvals)

    @property
    def mode(self) -> str:
        """The agent's effective mode: normal, read_only or halted."""
        override = self.follower.get("override", self.scope)
        if override is not None and override.state != CLEARED:
            return override.state
        states = {s.state for s in self._safe_modes()}
        return HALTED if HALTED in states else READ_ONLY if READ_ONLY in states else NORMAL
