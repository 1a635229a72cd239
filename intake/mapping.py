"""One span → what it means to the ledger (the table in ``docs/otel.md``).

Three conventions are read, old and new attribute names alike: the OpenTelemetry GenAI
semantic conventions (``gen_ai.*``), OpenInference (``openinference.span.kind``,
``llm.*``, ``tool.*``, ``retrieval.*``) and OpenLLMetry (``traceloop.*``). Each span is
classified once, when it arrives, into a :class:`Mapped` with its event bodies; which span
is *the run* is decided later, when the trace is complete (:mod:`agentledger.intake.runs`).

Pure code: no I/O, no clock. Every body is validated against its schema model here, so a
span that cannot be a valid event is refused (with the reason) when it arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson
from pydantic import ValidationError

from agentledger.core.pricing import DEFAULT_PRICES, PriceTable
from agentledger.core.redaction import Redactor
from agentledger.core.settings import DEFAULT_REDACT_KEYS
from agentledger.intake.catalogue import DEFAULT_MODE, MODES, ToolCatalogue
from agentledger.intake.spans import MAX_SAFE_INT, STATUS_ERROR, BadValue, SpanRecord, holdable
from agentledger.schemas.events import BODY_MODELS, validation_reason

MODE_ATTRIBUTE: Final = "agentledger.tool.mode"
"""A span attribute (``read`` | ``write``) that states a tool's mode outright."""
GENAI_RUN: Final = frozenset({"invoke_agent", "create_agent"})
GENAI_MODEL: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
OI_KINDS: Final = {"AGENT": "agent", "CHAIN": "chain", "LLM": "model", "EMBEDDING": "model",
                   "TOOL": "tool", "RETRIEVER": "retrieval", "GUARDRAIL": "guardrail"}
TRACELOOP_KINDS: Final = {"workflow": "agent", "agent": "agent", "task": "other",
                          "tool": "tool"}
ARGS_MAX_BYTES: Final = 16 * 1024
BUDGET_COST: Final = "agentledger.budget.max_cost_usd"
BUDGET_TOOL_CALLS: Final = "agentledger.budget.max_tool_calls"
"""A run's budget, as span or resource attributes (the root span is exported last, so the
budget is read from any span of the run, or from the resource: a per-agent budget)."""
UNVERSIONED: Final = "unversioned"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:@/+-]")
DEFAULT_REDACTOR: Final = Redactor(DEFAULT_REDACT_KEYS)
"""The SDK's default redaction; the intakes pass one built from ``Settings.redact_keys``."""


class MappingError(ValueError):
    """The span cannot be a valid ledger event; ``reason`` is a short machine word."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Mapped:
    """A span's meaning: its kind and the events it contributes (type, time ns, body)."""

    span: SpanRecord
    kind: str
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    model_key: str | None = None
    budget: dict[str, Any] | None = None
    """``{max_cost_usd, max_tool_calls}`` when this span or its resource declares one."""


def name(value: Any, default: str) -> str:
    """A value as an envelope/body Name: disallowed characters become '_', max 128."""
    text = _NAME_BAD.sub("_", str(value)) if value is not None else ""
    text = text.lstrip("_.:@/+-")[:128]
    return text or default


def sha256_json(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def classify(span: SpanRecord) -> str:
    """agent | chain | model | tool | retrieval | guardrail | other."""
    op = span.attr("gen_ai.operation.name")
    if op in GENAI_RUN:
        return "agent"
    if op in GENAI_MODEL:
        return "model"
    if op == "execute_tool":
        return "tool"
    if op == "retrieval":
        return "retrieval"
    oi = span.attr("openinference.span.kind")
    if isinstance(oi, str) and oi.upper() in OI_KINDS:
        return OI_KINDS[oi.upper()]
    tl = span.attr("traceloop.span.kind")
    if isinstance(tl, str) and tl.lower() in TRACELOOP_KINDS:
        return TRACELOOP_KINDS[tl.lower()]
    if span.attr("llm.request.type") is not None:  # OpenLLMetry's model spans
        return "model"
    return "other"


def _int(span: SpanRecord, *names: str) -> int:
    value = span.attr(*names)
    try:
        number = max(int(value), 0) if value is not None else 0
    except (TypeError, ValueError, OverflowError):
        raise MappingError("invalid_attribute", f"{names[0]}: {value!r:.100} is not an "
                                                "integer") from None
    if number > MAX_SAFE_INT:  # summed into run totals, which the hash chain must hold
        raise MappingError("invalid_attribute", f"{names[0]}: {value!r:.100} is beyond "
                                                "2**53 - 1")
    return number


def _float(span: SpanRecord, *names: str) -> float | None:
    value = span.attr(*names)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MappingError("invalid_attribute", f"{names[0]}: {value!r:.100} is not a "
                                                "number") from None
    if not 0 <= number < 1e15:  # NaN fails this too; run totals sum it, and must stay finite
        raise MappingError("invalid_attribute", f"{names[0]}: {value!r:.100} is negative, "
                                                "not finite or beyond 1e15")
    return number


def _latency_ms(span: SpanRecord) -> float:
    return round((span.end_ns - span.start_ns) / 1e6, 3)


def _failed(span: SpanRecord) -> str | None:
    """ok → None; otherwise 'error' or 'timeout' (from error.type / the exception)."""
    error_type = span.attr("error.type") or span.exception_type
    if span.status_code != STATUS_ERROR and not error_type:
        return None
    return "timeout" if "timeout" in str(error_type or "").lower() else "error"


def _model(span: SpanRecord, prices: PriceTable, out: Mapped) -> None:
    provider = name(span.attr("gen_ai.provider.name", "gen_ai.system", "llm.provider",
                              "llm.system"), "unknown").lower()
    model = name(span.attr("gen_ai.request.model", "llm.model_name", "gen_ai.response.model"),
                 "unknown")
    version = name(span.attr("gen_ai.response.model", "llm.model_name"), model)
    tokens_in = _int(span, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                     "llm.token_count.prompt")
    tokens_out = _int(span, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                      "llm.token_count.completion")
    cached = min(_int(span, "gen_ai.usage.cache_read.input_tokens",
                      "gen_ai.usage.cache_read_input_tokens",
                      "llm.token_count.prompt_details.cache_read"), tokens_in)
    cost = _float(span, "gen_ai.usage.cost", "llm.cost.total")
    price_version = None
    if cost is None:
        cost, price_version = prices.cost(provider, model, tokens_in, tokens_out, cached)
    role = name(span.attr("agentledger.role", "gen_ai.operation.name", "llm.request.type"),
                "llm")
    failed = _failed(span)
    out.events.append(("model.call", span.start_ns, {
        "provider": provider, "model": model, "model_version": version, "role": role,
        "tokens_in": tokens_in, "tokens_out": tokens_out, "cached_tokens": cached,
        "cost_usd": cost, "price_version": price_version, "latency_ms": _latency_ms(span),
        "status": failed or "ok"}))
    out.cost_usd, out.tokens_in, out.tokens_out = cost, tokens_in, tokens_out
    out.model_key = f"{provider}/{model}"


def _args(span: SpanRecord, redactor: Redactor) -> dict[str, Any]:
    """The tool's arguments, redacted with the intake's settings (as the SDK redacts).

    Arguments sent as a JSON string are parsed here, so they are made holdable here too
    (:func:`~agentledger.intake.spans.holdable`: an integer beyond 2**53 becomes a string;
    nesting beyond its limit refuses the span).
    """
    raw = span.attr("gen_ai.tool.call.arguments", "tool.parameters", "input.value",
                    "traceloop.entity.input")
    if isinstance(raw, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            raw = orjson.loads(raw)
            try:
                raw = holdable(raw)
            except BadValue as exc:
                raise MappingError("invalid_attribute", f"tool arguments: {exc}") from None
    args = raw if isinstance(raw, dict) else ({} if raw is None else {"value": raw})
    args = cast("dict[str, Any]", redactor.redact(args))
    encoded = orjson.dumps(args, option=orjson.OPT_SORT_KEYS)
    if len(encoded) > ARGS_MAX_BYTES:
        return {"truncated": True, "bytes": len(encoded),
                "sha256": hashlib.sha256(encoded).hexdigest()}
    return args


def _tool(span: SpanRecord, tenant: str, catalogue: ToolCatalogue, out: Mapped,
          redactor: Redactor) -> None:
    tool = name(span.attr("gen_ai.tool.name", "tool.name", "traceloop.entity.name") or span.name,
                "tool")
    stated = span.attr(MODE_ATTRIBUTE)
    mode = stated if stated in MODES else (catalogue.mode(tenant, tool) or DEFAULT_MODE)
    call_id = span.attr("agentledger.idempotency_key", "gen_ai.tool.call.id")
    args = _args(span, redactor)
    out.events.append(("tool.call", span.start_ns, {
        "tool": tool, "action": name(span.attr("agentledger.tool.action"), "execute"),
        "mode": mode, "tool_version": name(span.attr("agentledger.tool.version"), UNVERSIONED),
        "schema_hash": sha256_json({}), "args": args, "args_hash": sha256_json(args),
        "idempotency_key": str(call_id)[:256] if call_id is not None else None}))
    failed = _failed(span)
    error_type = span.attr("error.type") or span.exception_type or (failed and failed)
    out.events.append(("tool.result", span.end_ns, {
        "tool": tool, "status": failed or "ok",
        "error_type": name(error_type, "error") if failed else None,
        "latency_ms": _latency_ms(span)}))


def _retrieval(span: SpanRecord, out: Mapped) -> None:
    ids: list[str] = []
    hashes: list[str] = []
    i = 0
    while (doc := span.attr(f"retrieval.documents.{i}.document.id")) is not None:
        content = span.attr(f"retrieval.documents.{i}.document.content")
        ids.append(str(doc)[:256])
        hashes.append(hashlib.sha256(str(content if content is not None else doc)
                                     .encode()).hexdigest())
        i += 1
    out.events.append(("retrieval", span.start_ns, {
        "source": name(span.attr("gen_ai.data_source.id", "retrieval.source") or span.name,
                       "retrieval"),
        "index_version": name(span.attr("agentledger.index_version"), UNVERSIONED),
        "doc_ids": ids, "doc_hashes": hashes}))


def _guardrail(span: SpanRecord, out: Mapped) -> None:
    out.events.append(("policy.decision", span.start_ns, {
        "policy_id": name(span.name, "guardrail"), "policy_version": UNVERSIONED,
        "rule": span.name[:4096] or "guardrail",
        "decision": "deny" if _failed(span) else "allow", "action": span.name[:4096] or "-"}))


def map_span(span: SpanRecord, tenant: str, catalogue: ToolCatalogue,
             prices: PriceTable = DEFAULT_PRICES,
             redactor: Redactor = DEFAULT_REDACTOR) -> Mapped:
    """Classify ``span`` and build its events; raises :class:`MappingError` if it is bad."""
    if span.problem:
        reason, _, message = span.problem.partition(": ")
        raise MappingError(reason, message)
    out = Mapped(span, classify(span), budget=budget_of(span))
    if out.kind == "model":
        _model(span, prices, out)
    elif out.kind == "tool":
        _tool(span, tenant, catalogue, out, redactor)
    elif out.kind == "retrieval":
        _retrieval(span, out)
    elif out.kind == "guardrail":
        _guardrail(span, out)
    for event_type, _ts, body in out.events:
        try:
            BODY_MODELS[event_type].model_validate(body)
        except ValidationError as exc:
            raise MappingError("schema", f"{event_type}: {validation_reason(exc)[1]}") from None
    return out


def run_started(run: SpanRecord) -> dict[str, Any]:
    """The run.started body of the span chosen as the run."""
    session = run.attr("session.id", "gen_ai.conversation.id", "traceloop.association"
                       ".properties.session_id")
    inputs = run.attr("input.value", "traceloop.entity.input", "gen_ai.input.messages")
    return {
        "workflow": name(run.attr("traceloop.workflow.name", "gen_ai.agent.name",
                                  "traceloop.entity.name") or run.name, "agent"),
        "inputs_hash": sha256_json(inputs),
        "input_ref": f"session:{session}"[:4096] if session is not None else None,
        "prompt_template": name(run.attr("agentledger.prompt_template"), "default"),
        "prompt_version": name(run.attr("agentledger.prompt_version"), UNVERSIONED),
        "model_config": {}, "policy_version": name(run.attr("agentledger.policy_version"),
                                                   UNVERSIONED),
        "budget": {"max_cost_usd": None, "max_tool_calls": None},
    }


def budget_of(span: SpanRecord) -> dict[str, Any] | None:
    """The budget this span (or its resource) declares; None when it declares none. A value
    that is not a non-negative number refuses the span, as any bad attribute does."""
    cost = span.attr(BUDGET_COST)
    calls = span.attr(BUDGET_TOOL_CALLS)
    cost = span.res(BUDGET_COST) if cost is None else cost
    calls = span.res(BUDGET_TOOL_CALLS) if calls is None else calls
    if cost is None and calls is None:
        return None
    try:
        max_cost = float(cost) if cost is not None else None
        max_calls = int(calls) if calls is not None else None
    except (TypeError, ValueError, OverflowError):
        raise MappingError("invalid_attribute", f"{BUDGET_COST}/{BUDGET_TOOL_CALLS}: "
                                                f"{cost!r:.50}, {calls!r:.50} are not "
                                                "numbers") from None
    if (max_cost is not None and not 0 <= max_cost < 1e15) or \
            (max_calls is not None and not 0 <= max_calls <= MAX_SAFE_INT):
        raise MappingError("invalid_attribute", f"{BUDGET_COST}/{BUDGET_TOOL_CALLS}: "
                                                "negative, not finite or too large")
    return {"max_cost_usd": max_cost, "max_tool_calls": max_calls}


def claimed_agent(span: SpanRecord) -> str:
    """The agent a span would make its run's: ``gen_ai.agent.name``, else the service."""
    return name(span.attr("gen_ai.agent.name") or span.res("service.name"), "otel-agent")


def identity(run: SpanRecord, tenant: str) -> dict[str, Any]:
    """The envelope's who-fields for a run (the tenant always from the intake, never spans)."""
    service = run.res("service.name")
    user = run.attr("user.id", "enduser.id") or run.res("enduser.id")
    return {
        "tenant": tenant,
        "workspace": name(run.res("agentledger.workspace"), "default"),
        "agent": claimed_agent(run),
        "agent_version": name(run.attr("gen_ai.agent.version") or run.res("service.version"),
                              UNVERSIONED),
        "principal": name(service, "otel"),
        "on_behalf_of": name(user, "unknown") if user is not None else None,
        "env": name(run.res("deployment.environment.name", "deployment.environment"), "prod"),
    }
