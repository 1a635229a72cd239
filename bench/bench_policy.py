"""Tool-policy decision latency, in process: ``python bench/bench_policy.py [--json]``.

Times :meth:`~agentledger.producers.gate.Gate.decide` on the packaged default policy over a
mix of calls (allow, deny, escalate, tenant isolation, unknown actions), one decision at a
time, and reports p50/p99 against the issue's goal (p99 <= 1 ms). Raw baselines measured in
the same run: a dict lookup (the control-loop guard's cost), and Cedar's own
``is_authorized`` on an empty policy set and on the same request with the loaded policy (the
engine without our wrapper). ``--compare`` also times OPA's Rego (``regopy``, if installed)
on an equivalent refund rule against Cedar, the measurement behind the engine choice in
``docs/policy.md``. The last line of output is one JSON object. """

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import cedarpy

from agentledger.producers.gate import Gate

CALLS: list[dict[str, Any]] = [
    {"tenant": "acme", "agent": "mail-assistant", "tool": "gmail", "action": "read_message"},
    {"tenant": "acme", "agent": "mail-assistant", "tool": "gmail", "action": "send_message",
     "idempotency_key": "k"},
    {"tenant": "acme", "agent": "jira-bot", "tool": "jira", "action": "create_issue",
     "idempotency_key": "k"},
    {"tenant": "acme", "agent": "refund-agent", "tool": "stripe", "action": "create_refund",
     "args": {"id": "ch_1", "amount": 150}, "idempotency_key": "k"},
    {"tenant": "acme", "agent": "refund-agent", "tool": "stripe", "action": "create_refund",
     "args": {"id": "ch_1", "amount": 450}, "idempotency_key": "k"},
    {"tenant": "acme", "agent": "refund-agent", "tool": "stripe", "action": "get_charge",
     "resource_tenant": "globex"},
    {"tenant": "acme", "agent": "triage-bot", "tool": "zendesk", "action": "set_priority",
     "args": {"id": "T-1"}, "idempotency_key": "k"},
    {"tenant": "acme", "agent": "triage-bot", "tool": "zendesk", "action": "delete_all"},
]


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(min(500, n)):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return {"p50_us": round(samples[len(samples) // 2] / 1000, 2),
            "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 2),
            "max_us": round(samples[-1] / 1000, 2)}


def rego_compare(n: int) -> dict[str, Any]:
    """The refund rule in Rego (regopy), queried in process, against the same in Cedar."""
    try:
        from regopy import Interpreter
    except ImportError:
        return {"regopy": "not installed (pip install regopy)"}
    module = """package gate
import rego.v1
default decision := "deny"
decision := "allow" if {
  input.action == "stripe:create_refund"
  input.context.args.amount <= 200
  data.agents[input.principal].tenant == input.context.tenant
}
decision := "escalate" if {
  input.action == "stripe:create_refund"
  input.context.args.amount > 200
  data.agents[input.principal].tenant == input.context.tenant
}
"""
    rego = Interpreter()
    rego.add_module("gate", module)
    rego.add_data_json(json.dumps({"agents": {"acme/refund-agent": {"tenant": "acme"}}}))
    request = json.dumps({"principal": "acme/refund-agent", "action": "stripe:create_refund",
                          "context": {"tenant": "acme", "args": {"amount": 150}}})
    bundle = rego.build("data.gate.decision")

    def query() -> Any:
        rego.set_input_term(request)
        return rego.query("data.gate.decision")

    def compiled() -> Any:
        rego.set_input_term(request)
        return rego.query_bundle(bundle)

    cedar_policy = cedarpy.PolicySet.from_str(
        'permit(principal, action == Action::"stripe:create_refund", resource) when '
        '{ context.args.amount <= 200 && principal.tenant == context.tenant };')
    entities = cedarpy.Entities.from_json_str(json.dumps([
        {"uid": {"type": "Agent", "id": "acme/refund-agent"}, "attrs": {"tenant": "acme"},
         "parents": []}]))
    cedar_request = {"principal": 'Agent::"acme/refund-agent"',
                     "action": 'Action::"stripe:create_refund"', "resource": 'Tool::"stripe"',
                     "context": {"tenant": "acme", "args": {"amount": 150}}}
    assert "allow" in str(compiled()) and cedarpy.is_authorized(
        cedar_request, cedar_policy, entities).allowed
    return {"rego_query": timed(query, n // 4), "rego_bundle": timed(compiled, n // 4),
            "cedar_same_rule": timed(lambda: cedarpy.is_authorized(
                cedar_request, cedar_policy, entities), n)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="decisions to time")
    parser.add_argument("--compare", action="store_true", help="also time Rego (regopy)")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    t0 = time.perf_counter()
    gate = Gate.load()
    load_ms = (time.perf_counter() - t0) * 1000
    state = {"acme/triage-bot": "normal"}
    i = 0

    def decide() -> Any:
        nonlocal i
        i += 1
        return gate.decide(**CALLS[i % len(CALLS)])

    outcomes: dict[str, int] = {}
    for call in CALLS:
        outcome = gate.decide(**call).decision
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    empty = cedarpy.PolicySet.from_str("")
    request = gate.request(**{k: v for k, v in CALLS[3].items()})
    result = {
        "policy_version": gate.version, "load_ms": round(load_ms, 1), "n": args.n,
        "outcomes_in_mix": outcomes,
        "decision": timed(decide, args.n),
        "baseline_dict_lookup": timed(lambda: state.get("acme/triage-bot"), args.n),
        "baseline_cedar_empty_policy": timed(
            lambda: cedarpy.is_authorized(request, empty, gate._entities), args.n),
        "baseline_cedar_raw": timed(
            lambda: cedarpy.is_authorized(request, gate._policies, gate._entities), args.n),
    }
    result["goal_p99_us"] = 1000.0
    result["goal_met"] = result["decision"]["p99_us"] <= 1000.0
    if args.compare:
        result["compare"] = rego_compare(args.n)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    print(json.dumps(result))
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
