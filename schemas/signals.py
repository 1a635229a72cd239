"""What the control loop publishes: control signals (``agent.control``) and windowed
metrics (``agent.metrics``), schema_version 1.

A control record's Kafka key is ``kind:scope[:rule]`` (:attr:`ControlSignal.key`), so the
compacted topic keeps exactly one current state per breaker, safe-mode rule, run budget
and manual override. ``version`` grows by one per transition of that key; the pair
(key, version) identifies a transition, which is how ClickHouse makes a re-sent signal
invisible and how a reader tells a stale record from a new one.

Scopes are slash-separated, tenant first (the `agent.control` key, see docs/reliability.md):

- breaker: ``tenant/*/tool`` (one breaker per tenant and tool, across agents);
- safe mode and overrides: ``tenant/agent``;
- safe mode of one agent version (the canary): ``tenant/agent/version/<agent_version>``;
- budget: ``tenant/agent/run/<run_id>``;
- heartbeat: ``worker/<worker id>`` (liveness and event-time progress of a stream worker).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SIGNAL_SCHEMA_VERSION: Final = 1

SignalKind = Literal["breaker", "safe_mode", "budget", "override", "heartbeat"]

# Breaker states (resilience4j names) and safe-mode states.
CLOSED: Final = "CLOSED"
OPEN: Final = "OPEN"
HALF_OPEN: Final = "HALF_OPEN"
NORMAL: Final = "normal"
READ_ONLY: Final = "read_only"
HALTED: Final = "halted"
EXCEEDED: Final = "exceeded"
CLEARED: Final = "cleared"
ALIVE: Final = "alive"

MAX_TRIGGER_IDS: Final = 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Signature(_Model):
    """The ledger's signature of the record it sits in (``core/signing.py``).

    Signed: the RFC 8785 form of the record's JSON without this member, behind a purpose
    line. ``key_id`` names the signing key, so followers can trust several during a
    rotation. The SDK's followers obey a control signal or approval state only with a
    signature that verifies against a trusted key (docs/security.md).
    """

    alg: Literal["ed25519"] = "ed25519"
    key_id: str = Field(min_length=1, max_length=64)
    sig: str = Field(min_length=1, max_length=128)


class ControlSignal(_Model):
    """One state transition (or the current state) of one scope."""

    schema_version: Literal[1] = 1
    kind: SignalKind
    scope: str = Field(min_length=1, max_length=512)
    rule: str = Field(default="", max_length=128, description="safe-mode rule name, or ''")
    state: str = Field(min_length=1, max_length=32)
    previous_state: str = ""
    version: int = Field(ge=0)
    ts: datetime = Field(description="event time of the transition")
    emitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: str = Field(default="", max_length=2048)
    policy_version: str = ""
    triggered_by: list[str] = Field(default_factory=list, max_length=MAX_TRIGGER_IDS)
    fallback: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    signature: Signature | None = Field(
        default=None, description="the ledger's signature; unsigned records are not obeyed")

    @property
    def key(self) -> str:
        return control_key(self.kind, self.scope, self.rule)

    @property
    def tenant(self) -> str:
        return self.scope.split("/", 1)[0]

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ControlSignal:
        return cls.model_validate_json(raw)


def control_key(kind: str, scope: str, rule: str = "") -> str:
    return f"{kind}:{scope}:{rule}" if rule else f"{kind}:{scope}"


def breaker_scope(tenant: str, tool: str) -> str:
    return f"{tenant}/*/{tool}"


def agent_scope(tenant: str, agent: str) -> str:
    return f"{tenant}/{agent}"


def version_scope(tenant: str, agent: str, agent_version: str) -> str:
    """One version of an agent (the canary degrades a bad release, not the agent)."""
    return f"{tenant}/{agent}/version/{agent_version}"


def run_scope(tenant: str, agent: str, run_id: str) -> str:
    return f"{tenant}/{agent}/run/{run_id}"


MetricKind = Literal["unit_economics", "tool_health"]


class MetricWindow(_Model):
    """Aggregates of one subject over one event-time window.

    ``subject`` is the workflow (unit_economics) or the tool (tool_health). A window may be
    published several times while it is open; ``revision`` grows each time and the latest
    revision is the value (ClickHouse keeps it with ReplacingMergeTree).
    """

    schema_version: Literal[1] = 1
    kind: MetricKind
    tenant: str
    agent: str
    subject: str
    window_start: datetime
    window_end: datetime
    revision: int = Field(ge=0)
    final: bool = False
    emitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    values: dict[str, float]

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.agent}/{self.subject}"

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> MetricWindow:
        return cls.model_validate_json(raw)
