"""Event models, schema_version 1 (exported as JSON Schema in ``schemas/json/``).

One envelope on every event, one body model per ``event_type``, and a discriminated union
over ``event_type`` so a parser picks the body in one step and an unknown type is an
error that names the field. Models are strict and forbid unknown fields: the ledger is an
audit record, and an event that does not say exactly what the schema says is rejected
(to the DLQ, by the sink) rather than half-understood.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeAlias, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    TypeAdapter,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1

HEX32 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="OTel trace id, 32 hex")]
HEX16 = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="OTel span id, 16 hex")]
SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256, 64 lowercase hex")]
Signature = Annotated[str, Field(
    pattern=r"^[0-9a-f]{64}(?:[0-9a-f]{64})?$",
    description="the agent's signature of the event hash: HMAC-SHA256 (64 lowercase hex) "
                "or ed25519 (128 lowercase hex), see schemas/integrity.py")]
Name = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]*$"),
]
SCOPE_SEPARATORS: Final = ("/", ":")
"""The characters that join names into control scopes and keys (``tenant/agent``,
``kind:scope:rule``, see :mod:`agentledger.schemas.signals`)."""
SCOPE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$"
"""A tenant or agent name: :data:`Name` without the scope separators. Were ``/`` allowed,
tenant ``acme/eu`` with agent ``x`` and tenant ``acme`` with agent ``eu/x`` would share
the scope ``acme/eu/x`` (one breaker, one safe mode, one Cedar principal); were ``:``
allowed, agent ``bot:x``'s safe-mode keys would start with agent ``bot``'s prefix. Every
place that takes a tenant or agent name checks it against this: events, the SDK's
identity, API key entries, the control guard, the OTLP intake's resource attributes."""


def scope_name_error(value: object) -> str | None:
    """Why ``value`` cannot be a tenant or agent name (None: it can, as far as the scope
    separators go; length and characters are the pattern's to say)."""
    if isinstance(value, str):
        for sep in SCOPE_SEPARATORS:
            if sep in value:
                return (f"{value[:64]!r} contains {sep!r}, a control-scope separator: tenant "
                        f"and agent names may not contain '/' or ':'")
    return None


def _no_scope_separator(value: Any) -> Any:
    # Runs before the pattern check, so the refusal names the separator instead of
    # quoting a regular expression at whoever reads the DLQ.
    error = scope_name_error(value)
    if error is not None:
        raise ValueError(error)
    return value


ScopeName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=SCOPE_NAME_PATTERN,
          description="tenant or agent: no '/' or ':' (they separate control scopes)"),
    BeforeValidator(_no_scope_separator),
]
Text = Annotated[str, Field(max_length=4096)]
UUID_TEXT = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        description="UUIDv7, lowercase, hyphenated",
    ),
]

_TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
_TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


# --- bodies -------------------------------------------------------------------------


class Budget(_Strict):
    max_cost_usd: NonNegativeFloat | None = None
    max_tool_calls: NonNegativeInt | None = None


class RunStarted(_Strict):
    workflow: Name
    inputs_hash: SHA256
    input_ref: Text | None = None
    prompt_template: Name
    prompt_version: Name
    # "model_config" is reserved by pydantic, so the attribute has another name.
    llm_config: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    policy_version: Name
    budget: Budget = Field(default_factory=Budget)


class ModelCall(_Strict):
    provider: Name
    model: Name
    model_version: Name
    role: Name = Field(description="classifier, planner, executor, ...")
    tokens_in: NonNegativeInt
    tokens_out: NonNegativeInt
    cached_tokens: NonNegativeInt = 0
    cost_usd: NonNegativeFloat
    price_version: Name | None = Field(
        default=None, description="price table version used when the SDK priced the call"
    )
    latency_ms: NonNegativeFloat
    status: Literal["ok", "error", "timeout"] = "ok"


class Retrieval(_Strict):
    source: Name
    index_version: Name
    doc_ids: list[Annotated[str, Field(min_length=1, max_length=256)]]
    doc_hashes: list[SHA256]

    @model_validator(mode="after")
    def _same_length(self) -> Retrieval:
        if len(self.doc_ids) != len(self.doc_hashes):
            raise ValueError("doc_ids and doc_hashes must have the same length")
        return self


class ToolCall(_Strict):
    tool: Name
    action: Name
    mode: Literal["read", "write"]
    tool_version: Name
    schema_hash: SHA256
    args: dict[str, Any] = Field(description="tool arguments after redaction")
    args_hash: SHA256
    idempotency_key: Annotated[str, Field(max_length=256)] | None = None
    attempt: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        default=None, description="1-based attempt of a call that may be retried (every "
        "attempt reuses the call's idempotency_key)")


class SideEffect(_Strict):
    resource: Text
    op: Name


class ToolResult(_Strict):
    tool: Name
    status: Literal["ok", "error", "timeout", "rejected"]
    error_type: Name | None = None
    latency_ms: NonNegativeFloat
    side_effect: SideEffect | None = None
    verified: bool | None = Field(default=None, description="post-action read-back held")
    attempt: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        default=None, description="the attempt this result ends (see tool.call)")


class PolicyDecision(_Strict):
    policy_id: Name
    policy_version: Name
    rule: Text
    decision: Literal["allow", "deny", "escalate"]
    action: Text
    reason: Text | None = Field(default=None, description="why the rule decided so")


class ApprovalRequested(_Strict):
    approver: Name = Field(description="the approver role (the queue) asked to decide")
    action: Text
    reason: Text | None = None
    approval_id: Name | None = Field(default=None, description="id approvers decide on")
    approvals_required: Annotated[int, Field(ge=1, le=10, strict=True)] | None = None
    sla_s: NonNegativeFloat | None = Field(default=None, description="queue's target, s")
    expires_in_s: NonNegativeFloat | None = Field(
        default=None, description="after this the request expires (outcome per policy)")
    args: dict[str, Any] | None = Field(default=None, description="tool args, redacted")


class ApprovalResolved(_Strict):
    approver: Name
    decision: Literal["approved", "rejected", "expired"]
    latency_ms: NonNegativeFloat
    approval_id: Name | None = None
    approvers: list[Name] | None = Field(default=None, description="distinct deciders")
    reason: Text | None = None


class Totals(_Strict):
    cost_usd: NonNegativeFloat = 0.0
    tokens_in: NonNegativeInt = 0
    tokens_out: NonNegativeInt = 0
    model_calls: NonNegativeInt = 0
    tool_calls: NonNegativeInt = 0
    duration_ms: NonNegativeFloat = 0.0
    cost_by_model: dict[Name, NonNegativeFloat] = Field(
        default_factory=dict,
        description="cost_usd split by provider/model, so finance can group margins by model")


class RunFinished(_Strict):
    outcome: Literal["success", "failure", "aborted", "rolled_back"]
    workflow: Name | None = Field(
        default=None, description="repeated from run.started: one event answers economics")
    error: Text | None = None
    totals: Totals = Field(default_factory=Totals)


class HumanOverride(_Strict):
    who: Name
    what: Text
    why: Text


class Rollback(_Strict):
    who: Name
    what: Text
    why: Text


# --- envelope -----------------------------------------------------------------------


class Envelope(_Strict):
    """Fields every event carries. ``event_id`` (UUIDv7) is the dedup key end to end."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID_TEXT
    event_type: str
    ts: AwareDatetime = Field(description="event time, UTC, microseconds")
    trace_id: HEX32
    span_id: HEX16
    parent_span_id: HEX16 | None = None
    run_id: Name
    seq: NonNegativeInt
    tenant: ScopeName
    workspace: Name
    agent: ScopeName
    agent_version: Name
    principal: Name
    on_behalf_of: Name | None = None
    env: Name
    prev_hash: SHA256
    hash: SHA256
    sig: Signature | None = None
    canon: Literal["jcs"] | None = Field(
        default=None, description="canonical form under hash: absent = legacy (orjson, "
                                  "sorted keys); 'jcs' = RFC 8785")
    origin: Literal["sdk", "otlp_http", "otlp_kafka"] | None = Field(
        default=None, description="who computed the hash chain: absent or 'sdk' = the "
                                  "agent; 'otlp_*' = the ledger's OTLP intake")

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_from_json(cls, value: Any) -> Any:
        # JSON carries ts as an ISO string; strict mode otherwise refuses str → datetime
        # in python mode, which is how dicts from json.loads arrive.
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
        return value

    @field_validator("ts")
    @classmethod
    def _ts_utc_in_range(cls, value: datetime) -> datetime:
        value = value.astimezone(UTC)
        if not _TS_MIN <= value < _TS_MAX:
            raise ValueError(f"timestamp {value.isoformat()} is outside 2000..2100")
        return value


def _typed(event_type: str, body_model: type[BaseModel]) -> type[Envelope]:
    """One event class per type: the envelope with a Literal tag and its body."""
    name = "".join(part.capitalize() for part in event_type.split(".")) + "Event"
    annotations = {"event_type": Literal[event_type], "body": body_model}
    namespace = {"__annotations__": annotations, "__module__": __name__}
    return type(name, (Envelope,), namespace)


BODY_MODELS: Final[dict[str, type[BaseModel]]] = {
    "run.started": RunStarted,
    "model.call": ModelCall,
    "retrieval": Retrieval,
    "tool.call": ToolCall,
    "tool.result": ToolResult,
    "policy.decision": PolicyDecision,
    "approval.requested": ApprovalRequested,
    "approval.resolved": ApprovalResolved,
    "run.finished": RunFinished,
    "human.override": HumanOverride,
    "rollback": Rollback,
}
EVENT_TYPES: Final = tuple(BODY_MODELS)
EVENT_MODELS: Final[dict[str, type[Envelope]]] = {
    event_type: _typed(event_type, body) for event_type, body in BODY_MODELS.items()
}

AgentEvent: TypeAlias = Annotated[  # type: ignore[valid-type]
    Union[tuple(EVENT_MODELS.values())],  # noqa: UP007
    Field(discriminator="event_type"),
]
"""Any event of schema_version 1, discriminated on ``event_type``."""

Event = Envelope
"""The common base of every typed event, for annotations."""

_ADAPTER: Final[TypeAdapter[Envelope]] = TypeAdapter(AgentEvent)


def parse_event(data: dict[str, Any]) -> Envelope:
    """Validate a decoded event; raises ``pydantic.ValidationError`` naming the field."""
    return _ADAPTER.validate_python(data)


def parse_event_json(data: bytes | str) -> Envelope:
    """Validate an event straight from JSON bytes (the sink's hot path)."""
    return _ADAPTER.validate_json(data)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the union, as exported to ``schemas/json/``."""
    return _ADAPTER.json_schema(by_alias=True)


def validation_reason(exc: Exception) -> tuple[str, str]:
    """A short machine reason and a human message naming the failing field(s).

    The reason is one of ``unknown_event_type``, ``unsupported_schema_version``,
    ``invalid_json`` or ``schema``; it becomes a DLQ header and a ``rejected_events`` column.
    """
    errors = getattr(exc, "errors", None)
    if errors is None:
        return "schema", str(exc)[:1000]
    details = errors(include_url=False, include_input=False)
    parts: list[str] = []
    reason = "schema"
    for err in details[:5]:
        kind = err.get("type", "")
        loc = [str(p) for p in err.get("loc", ())]
        # The first loc item of a tagged union is the tag itself; drop it from the path.
        if loc and loc[0] in EVENT_MODELS:
            loc = loc[1:]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            reason = "unknown_event_type"
            loc = ["event_type"]
        elif kind == "json_invalid":
            reason = "invalid_json"
        elif loc[:1] == ["schema_version"] and reason == "schema":
            reason = "unsupported_schema_version"
        parts.append(f"{'.'.join(loc) or '<event>'}: {err.get('msg', kind)}")
    if len(details) > 5:
        parts.append(f"(+{len(details) - 5} more)")
    return reason, "; ".join(parts)
