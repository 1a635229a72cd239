"""The OTLP → ledger mapping, one test per row of the table in docs/otel.md (pure code)."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger.intake.catalogue import CatalogueError, load_catalogue
from agentledger.intake.mapping import map_span
from tests.otlputil import (
    ROOT_SPAN,
    T0,
    agent,
    body,
    record,
    run_of,
)

# -- GenAI semantic conventions ---------------------------------------------------------


def test_genai_invoke_agent_is_the_run():
    events = run_of([agent({"gen_ai.operation.name": "invoke_agent",
                            "gen_ai.agent.name": "triage", "gen_ai.agent.version": "3"}),
                     record({"gen_ai.operation.name": "chat"}, start=T0 + 10)])
    assert [e["event_type"] for e in events] == ["run.started", "model.call", "run.finished"]
    assert events[0]["body"]["workflow"] == "triage" and events[0]["agent"] == "triage"
    assert events[0]["agent_version"] == "3" and events[-1]["body"]["outcome"] == "success"
    assert events[-1]["body"]["totals"]["duration_ms"] == 1000


def test_genai_root_span_is_the_run_without_invoke_agent():
    events = run_of([agent({}, ), record({"gen_ai.operation.name": "chat"}, start=T0 + 1)])
    assert events[0]["span_id"] == ROOT_SPAN and events[0]["body"]["workflow"] == "agent"
    assert events[0]["agent"] == "support-bot"  # service.name


@pytest.mark.parametrize("op", ["chat", "text_completion", "generate_content", "embeddings"])
def test_genai_model_operations_are_model_calls(op: str):
    ((etype, b),) = body({"gen_ai.operation.name": op})
    assert etype == "model.call" and b["role"] == op


@pytest.mark.parametrize("attr", ["gen_ai.provider.name", "gen_ai.system"])
def test_genai_provider_new_and_deprecated(attr: str):
    ((_, b),) = body({"gen_ai.operation.name": "chat", attr: "Anthropic"})
    assert b["provider"] == "anthropic"


def test_genai_request_and_response_model():
    ((_, b),) = body({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                      "gen_ai.response.model": "gpt-4o-2024-08-06"})
    assert (b["model"], b["model_version"]) == ("gpt-4o", "gpt-4o-2024-08-06")


@pytest.mark.parametrize("names", [
    ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
    ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens")])
def test_genai_tokens_new_and_deprecated(names: tuple[str, str]):
    ((_, b),) = body({"gen_ai.operation.name": "chat", names[0]: 1000, names[1]: 200,
                      "gen_ai.usage.cache_read.input_tokens": 400})
    assert (b["tokens_in"], b["tokens_out"], b["cached_tokens"]) == (1000, 200, 400)


def test_cost_from_attribute_else_price_table():
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1_000_000,
             "gen_ai.usage.output_tokens": 100_000}
    ((_, priced),) = body(attrs)
    assert priced["cost_usd"] == pytest.approx(2.5 + 1.0)
    assert priced["price_version"] == "2026-11-01"
    ((_, stated),) = body({**attrs, "gen_ai.usage.cost": 0.25})
    assert (stated["cost_usd"], stated["price_version"]) == (0.25, None)
    ((_, unknown),) = body({**attrs, "gen_ai.request.model": "mystery"})
    assert (unknown["cost_usd"], unknown["price_version"]) == (0.0, "unpriced")


def test_genai_execute_tool_is_call_and_result_with_error():
    events = body({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm",
                   "gen_ai.tool.call.id": "call_7", "error.type": "TimeoutError",
                   "gen_ai.tool.call.arguments": '{"id": 7, "password": "p"}'}, status=2)
    (call_t, call), (result_t, result) = events
    assert (call_t, result_t) == ("tool.call", "tool.result")
    assert call["tool"] == "crm" and call["idempotency_key"] == "call_7"
    assert call["args"] == {"id": 7, "password": "[REDACTED]"}
    assert (result["status"], result["error_type"]) == ("timeout", "TimeoutError")
    assert result["latency_ms"] == 100.0
    ok = body({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm"})
    assert ok[1][1]["status"] == "ok" and ok[1][1]["error_type"] is None


def test_tool_mode_from_attribute_then_catalogue_then_write(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: '1'\ntool_catalogue:\n  acme: {kb: read, crm: write}\n"
                      "  '*': {search: read}\n")
    catalogue = load_catalogue(policy)

    def mode(tool: str, tenant: str = "acme", **attrs: Any) -> str:
        span = record({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                       **attrs})
        return map_span(span, tenant, catalogue).events[0][2]["mode"]

    assert mode("crm", **{"agentledger.tool.mode": "read"}) == "read"  # attribute wins
    assert mode("kb") == "read" and mode("crm") == "write"
    assert mode("search", tenant="globex") == "read"  # the '*' entry
    assert mode("kb", tenant="globex") == "write"  # unknown to globex: a write
    policy.write_text("tool_catalogue:\n  acme: {kb: sometimes}\n")
    with pytest.raises(CatalogueError, match="kb"):
        load_catalogue(policy)


def test_genai_retrieval():
    ((etype, b),) = body({"gen_ai.operation.name": "retrieval",
                          "gen_ai.data_source.id": "kb-main"})
    assert etype == "retrieval" and b["source"] == "kb-main" and b["doc_ids"] == []


# -- OpenInference ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["AGENT", "CHAIN"])
def test_openinference_agent_or_root_chain_is_the_run(kind: str):
    events = run_of([agent({"openinference.span.kind": kind, "session.id": "s-1",
                            "user.id": "alice", "input.value": "refund T-1"}),
                     record({"openinference.span.kind": "LLM"}, start=T0 + 1)])
    started = events[0]
    assert started["event_type"] == "run.started"
    assert started["body"]["input_ref"] == "session:s-1" and started["on_behalf_of"] == "alice"


@pytest.mark.parametrize("kind", ["LLM", "EMBEDDING"])
def test_openinference_llm_and_embedding(kind: str):
    ((etype, b),) = body({"openinference.span.kind": kind, "llm.model_name": "gpt-4o-mini",
                          "llm.provider": "openai", "llm.token_count.prompt": 10,
                          "llm.token_count.completion": 5, "llm.cost.total": 0.01})
    assert etype == "model.call"
    assert (b["provider"], b["model"], b["tokens_in"], b["tokens_out"], b["cost_usd"]) == (
        "openai", "gpt-4o-mini", 10, 5, 0.01)


def test_openinference_tool():
    (_, call), (_, result) = body({"openinference.span.kind": "TOOL", "tool.name": "lookup",
                                   "tool.parameters": '{"q": "x"}'})
    assert call["tool"] == "lookup" and call["args"] == {"q": "x"} and result["status"] == "ok"


def test_openinference_retriever_documents():
    ((etype, b),) = body({"openinference.span.kind": "RETRIEVER",
                          "retrieval.documents.0.document.id": "kb-7",
                          "retrieval.documents.0.document.content": "refund policy",
                          "retrieval.documents.1.document.id": "kb-9"})
    assert etype == "retrieval" and b["doc_ids"] == ["kb-7", "kb-9"]
    import hashlib

    assert b["doc_hashes"][0] == hashlib.sha256(b"refund policy").hexdigest()


def test_openinference_guardrail_is_a_policy_decision():
    ((etype, b),) = body({"openinference.span.kind": "GUARDRAIL"}, name="pii-filter", status=2)
    assert etype == "policy.decision" and b["decision"] == "deny"
    assert b["policy_id"] == "pii-filter"


# -- OpenLLMetry / Traceloop ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["workflow", "agent"])
def test_traceloop_workflow_or_agent_is_the_run(kind: str):
    events = run_of([agent({"traceloop.span.kind": kind, "traceloop.workflow.name": "refunds",
                            "traceloop.entity.name": "refunds"}),
                     record({"traceloop.span.kind": "task"}, start=T0 + 1, span_id="3" * 16),
                     record({"llm.request.type": "chat", "gen_ai.system": "openai",
                             "gen_ai.request.model": "gpt-4o"}, start=T0 + 2)])
    assert [e["event_type"] for e in events] == ["run.started", "model.call", "run.finished"]
    assert events[0]["body"]["workflow"] == "refunds"


def test_traceloop_tool():
    (_, call), _ = body({"traceloop.span.kind": "tool", "traceloop.entity.name": "stripe",
                         "traceloop.entity.input": '{"amount": 5}'})
    assert call["tool"] == "stripe" and call["args"] == {"amount": 5}
