"""Run and tool-call context managers: they fill the envelope so callers never do.

A run owns its hash chain (``seq``, ``prev_hash``) and its OTel span; each tool call,
model call and retrieval is a child span, and the event's ``span_id`` is that span's id.
A run is used from one thread at a time; different runs may share a Ledger across threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from agentledger.core.ids import format_ts, uuid7
from agentledger.core.pricing import PriceTable
from agentledger.core.redaction import Redactor
from agentledger.producers.controls import (
    ToolControls,
)
from agentledger.producers.digests import sha256_bytes, sha256_json
from agentledger.producers.identity import AgentIdentity
from agentledger.producers.tool_call import ReadBack, ToolCallContext
from agentledger.producers.tracing import traceparent
from agentledger.schemas.canonical import NotCanonicalizable
from agentledger.schemas.integrity import CANON_JCS, GENESIS, event_hash, sign


class EventLedger(Protocol):
    """What a run needs of its :class:`agentledger.producers.emitter.Ledger`: who emits, the clock,
    redaction, prices, the tracer, and a checked, signed send."""

    identity: AgentIdentity
    clock: Callable[[], datetime]
    redactor: Redactor
    prices: PriceTable
    signing_key: bytes | Ed25519PrivateKey | None
    tracer: trace.Tracer

    def check(self, event_type: str, body: dict[str, Any]) -> None: ...

    def send(self, event: dict[str, Any], traceparent: str) -> None: ...


class RunContext:
    """One agent run: emits ``run.started`` on enter and ``run.finished`` on exit.

    Leaving the block normally finishes with ``success`` and by an exception with
    ``failure`` (the exception propagates), unless :meth:`finish` was called first.
    """

    def __init__(
        self,
        ledger: EventLedger,
        *,
        workflow: str,
        inputs: Any = None,
        input_ref: str | None = None,
        prompt_template: str = "default",
        prompt_version: str = "1",
        model_config: Mapping[str, Any] | None = None,
        policy_version: str = "1",
        max_cost_usd: float | None = None,
        max_tool_calls: int | None = None,
        on_behalf_of: str | None = None,
        run_id: str | None = None,
    ):
        self.ledger = ledger
        self.workflow = workflow
        self.run_id = run_id or uuid7()
        self.on_behalf_of = on_behalf_of
        self._started = {
            "workflow": workflow,
            "inputs_hash": sha256_json(inputs),
            "input_ref": input_ref,
            "prompt_template": prompt_template,
            "prompt_version": prompt_version,
            "model_config": dict(model_config or {}),
            "policy_version": policy_version,
            "budget": {"max_cost_usd": max_cost_usd, "max_tool_calls": max_tool_calls},
        }
        self.seq = 0
        self.prev_hash = GENESIS
        self.finished = False
        self.outcome: str | None = None
        self.totals: dict[str, Any] = {"cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0,
                                       "model_calls": 0, "tool_calls": 0, "duration_ms": 0.0}
        self._cost_by_model: dict[str, float] = {}
        self._t0 = 0.0
        self._span: Span | None = None
        self.event_ids: list[str] = []

    # -- envelope and chain ----------------------------------------------------------

    def emit(self, event_type: str, body: dict[str, Any], span: Span | None = None) -> str:
        """Build, validate, chain and send one event of this run; returns its event_id."""
        span = span or self._span
        assert span is not None, "emit() outside the run's with-block"
        self.ledger.check(event_type, body)
        ctx = span.get_span_context()
        parent = getattr(span, "parent", None)
        ident = self.ledger.identity
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": uuid7(),
            "event_type": event_type,
            "ts": format_ts(self.ledger.clock()),
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
            "run_id": self.run_id,
            "seq": self.seq,
            "tenant": ident.tenant,
            "workspace": ident.workspace,
            "agent": ident.agent,
            "agent_version": ident.agent_version,
            "principal": ident.principal,
            "on_behalf_of": self.on_behalf_of,
            "env": ident.env,
            "prev_hash": self.prev_hash,
            "body": body,
            "canon": CANON_JCS,
        }
        try:  # RFC 8785: bytes a verifier in any language reproduces (docs/integrity.md)
            digest = event_hash(event, self.prev_hash)
        except NotCanonicalizable:  # an integer beyond 2**53, NaN, a non-JSON type:
            del event["canon"]  # the legacy form holds it, and verifies as before
            digest = event_hash(event, self.prev_hash)
        event["hash"] = digest
        key = self.ledger.signing_key  # HMAC (a secret) or ed25519 (the catalog has its public)
        event["sig"] = sign(digest, key) if key is not None and key != b"" else None
        self.ledger.send(event, traceparent(ctx))
        self.prev_hash = digest
        self.seq += 1
        event_id: str = event["event_id"]
        self.event_ids.append(event_id)
        return event_id

    def _child_span(self, name: str, start_ns: int | None = None,
                    attributes: Mapping[str, Any] | None = None) -> Span:
        parent_ctx = trace.set_span_in_context(self._span) if self._span else None
        return self.ledger.tracer.start_span(name, context=parent_ctx, start_time=start_ns,
                                             attributes=attributes)

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> RunContext:
        self._t0 = time.perf_counter()
        self._span = self.ledger.tracer.start_span(
            f"agent.run {self.workflow}",
            attributes={"agentledger.run_id": self.run_id, "agentledger.workflow": self.workflow},
        )
        self.emit("run.started", self._started)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if not self.finished:
            if exc is None:
                self.finish("success")
            else:
                self.finish("failure", error=f"{exc_type.__name__ if exc_type else ''}: {exc}")
        if self._span is not None:
            if exc is not None:
                self._span.set_status(Status(StatusCode.ERROR, str(exc)))
            self._span.end()

    def finish(self, outcome: str, error: str | None = None) -> str:
        """Emit ``run.finished`` now (success|failure|aborted|rolled_back)."""
        self.totals["duration_ms"] = round((time.perf_counter() - self._t0) * 1000, 3)
        self.totals["cost_usd"] = round(self.totals["cost_usd"], 10)
        self.totals["cost_by_model"] = {k: round(v, 10) for k, v in self._cost_by_model.items()}
        self.finished = True
        self.outcome = outcome
        redacted = self.ledger.redactor.redact(error) if error else None
        return self.emit("run.finished", {"outcome": outcome, "workflow": self.workflow,
                                          "error": redacted,
                                          "totals": dict(self.totals)})

    # -- steps ---------------------------------------------------------------------

    def model_call(
        self,
        *,
        provider: str,
        model: str,
        model_version: str,
        role: str,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        cached_tokens: int = 0,
        cost_usd: float | None = None,
        status: str = "ok",
    ) -> str:
        """Record a finished model call; priced from the Ledger's price table if no cost."""
        price_version = None
        if cost_usd is None:
            cost_usd, price_version = self.ledger.prices.cost(
                provider, model, tokens_in, tokens_out, cached_tokens)
        end_ns = time.time_ns()
        span = self._child_span(
            f"model.call {model}", end_ns - int(latency_ms * 1e6),
            {"gen_ai.system": provider, "gen_ai.request.model": model,
             "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out})
        event_id = self.emit("model.call", {
            "provider": provider, "model": model, "model_version": model_version, "role": role,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "cached_tokens": cached_tokens,
            "cost_usd": cost_usd, "price_version": price_version, "latency_ms": latency_ms,
            "status": status,
        }, span)
        span.end(end_ns)
        self.totals["model_calls"] += 1
        self.totals["tokens_in"] += tokens_in
        self.totals["tokens_out"] += tokens_out
        self.totals["cost_usd"] += cost_usd
        key = f"{provider}/{model}"
        self._cost_by_model[key] = self._cost_by_model.get(key, 0.0) + cost_usd
        return event_id

    def retrieval(self, *, source: str, index_version: str,
                  documents: Mapping[str, bytes | str]) -> str:
        """Record retrieved documents by id and content sha256 (contents stay local)."""
        span = self._child_span(f"retrieval {source}")
        event_id = self.emit("retrieval", {
            "source": source, "index_version": index_version,
            "doc_ids": list(documents), "doc_hashes": [sha256_bytes(c) for c in documents.values()],
        }, span)
        span.end()
        return event_id

    def tool_call(self, tool: str, action: str, *, mode: str, args: Mapping[str, Any],
                  tool_version: str = "1", schema: Mapping[str, Any] | None = None,
                  idempotency_key: str | None = None,
                  controls: ToolControls | None = None) -> ToolCallContext:
        return ToolCallContext(self, tool, action, mode=mode, args=args,
                               tool_version=tool_version, schema=schema,
                               idempotency_key=idempotency_key, controls=controls)

    def policy_decision(self, *, policy_id: str, policy_version: str, rule: str,
                        decision: str, action: str) -> str:
        return self.emit("policy.decision", {"policy_id": policy_id,
                                             "policy_version": policy_version, "rule": rule,
                                             "decision": decision, "action": action})

    def approval_requested(self, *, approver: str, action: str, reason: str | None = None) -> str:
        return self.emit("approval.requested",
                         {"approver": approver, "action": action, "reason": reason})

    def approval_resolved(self, *, approver: str, decision: str, latency_ms: float) -> str:
        return self.emit("approval.resolved",
                         {"approver": approver, "decision": decision, "latency_ms": latency_ms})

    def human_override(self, *, who: str, what: str, why: str) -> str:
        return self.emit("human.override", {"who": who, "what": what, "why": why})

    def rollback(self, *, who: str, what: str, why: str) -> str:
        return self.emit("rollback", {"who": who, "what": what, "why": why})


__all__ = ["EventLedger", "ReadBack", "RunContext", "ToolCallContext", "sha256_bytes",
           "sha256_json"]
