"""``POST /v1/gate/check`` latency at a fixed request rate on loopback.

    .venv/bin/python bench/bench_gate_api.py [--rate 1000] [--seconds 10] [--json]

The ledger API runs in a process of its own (as under ``agentledger up``), on an embedded
Tansu broker and a fresh chdb store, with one key bound to acme/refund-agent. An open-loop
client (aiohttp, 64 keep-alive connections) sends ``--rate`` requests per second for
``--seconds`` and times each from the moment it was *due* (so a server that falls behind
shows it, rather than the client waiting politely). The mix is what an agent asks: 70 %
reads (allowed, not recorded), 20 % small refunds of 1 to 199 USD (allowed, recorded:
money), 10 % mail sends (denied, recorded), over 100 agent runs, each call with its own
charge id. No stream worker runs, so the API's
staleness bound is raised (``AGENTLEDGER_GATE_STALE_AFTER_S``): the control state is
followed and read, but nothing fails closed for silence.

Raw baselines from the same run: a FastAPI route that returns a constant, served the same
way in a process of its own and driven at the same rate by the same client; and the
in-process decision (``ToolGuard.preflight``: mode, control verdict, Cedar policy) over
the same mix, one call at a time. The last line is one JSON object;
``gate_check_p99_ms`` is checked against the issue's goal (<= 5 ms).

``--adapter-openai-agents`` measures the OpenAI Agents SDK adapter instead (see
:func:`adapter_openai_agents`): the recording and gating it adds to a no-op tool, in
process, beside the raw tool's own invocation, and a decided approval → the resumed
agent's tool running. ``--adapter-langgraph`` does the same for the LangGraph adapter
(see :func:`adapter_langgraph`): a gated LangChain tool, and a graph paused by
``interrupt()`` resumed from its checkpointer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY_ENV = "BENCH_GATE_KEY"
APPROVERS_ENV = "BENCH_GATE_APPROVER_KEYS"
MIX: list[dict[str, Any]] = (
    [{"tool": "stripe", "action": "get_charge", "mode": "read", "args": {"id": "ch_1"}}] * 7
    + [{"tool": "stripe", "action": "create_refund", "mode": "write",
        "args": {"id": "ch_1", "amount": 50}, "idempotency_key": "k"}] * 2
    + [{"tool": "gmail", "action": "send_message", "mode": "write",
        "args": {"to": "x@example.com"}, "idempotency_key": "k"}])
GOAL_P99_MS = 5.0


def vary(body: dict[str, Any], i: int) -> dict[str, Any]:
    """``body`` with the arguments of call ``i``: its own charge id, and refund amounts
    spread over 1 to 199 USD, as an agent's calls differ (not one request repeated)."""
    args = dict(body["args"])
    if "id" in args:
        args["id"] = f"ch_{i}"
    if "amount" in args:
        args["amount"] = 1 + (i * 37) % 199 + (i % 100) / 100
    return {**body, "args": args}


def serve(kind: str, url_file: Path) -> None:
    """Subprocess entry: serve the gate API or the constant route until terminated."""
    from agentledger.services import serve_app

    if kind == "constant":
        from fastapi import FastAPI

        from agentledger.api.responses import OrjsonResponse

        app = FastAPI(default_response_class=OrjsonResponse)

        @app.post("/v1/const")
        async def const() -> Any:
            return {"decision": "allow"}

        url = serve_app(app, "127.0.0.1", 0, name="const")[2]
    else:
        from agentledger.auth import KeyRing, entry_for
        from agentledger.core.settings import load_settings
        from agentledger.core.store import client_for
        from agentledger.services import open_store, start_api

        settings = load_settings()
        if kind == "gate+sink":  # votes need the requests in the store: a sink beside it
            import threading

            from agentledger.services import build_sink

            sink = build_sink(settings, settings.kafka_bootstrap or "", open_store(settings))
            threading.Thread(target=sink.run, daemon=True).start()
        else:
            open_store(settings).close()
        ana, ben = os.environ[APPROVERS_ENV].split(",")
        ring = KeyRing([entry_for("bench-agent", os.environ[KEY_ENV], ["acme"],
                                  agents=["refund-agent"]),
                        entry_for("ana@finance", ana, ["acme"], roles=["finance"]),
                        entry_for("ben@finance", ben, ["acme"], roles=["finance"])])
        url = start_api(settings, client_for(settings), keys=ring, host="127.0.0.1",
                        port=0).url
    url_file.write_text(url)
    while True:
        time.sleep(3600)  # serving on its threads until the bench terminates it


def start(kind: str, env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    url_file = tmp / f"{kind}.url"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--url-file",
                             str(url_file)], env=env)
    deadline = time.monotonic() + 120
    while not url_file.exists() or not url_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {kind} server did not start")
        time.sleep(0.05)  # polling for the server's published URL, with a deadline
    return proc, url_file.read_text()


async def drive(url: str, key: str, bodies: list[dict[str, Any]], rate: float,
                seconds: float) -> dict[str, Any]:
    """Open loop: request i is due at t0 + i/rate; its latency counts from then."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    payloads = [json.dumps(b).encode() for b in bodies]
    n = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(i: int, due: float) -> None:
            try:
                async with session.post(url, data=payloads[i % len(payloads)],
                                        headers=headers) as res:
                    await res.read()
                    if res.status != 200:
                        errors[str(res.status)] = errors.get(str(res.status), 0) + 1
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - due)

        tasks = []
        t0 = time.perf_counter() + 0.1
        for i in range(n):
            due = t0 + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"n": n, "achieved_rps": round(n / elapsed, 1), "errors": errors,
            "p50_ms": round(latencies[n // 2] * 1000, 3),
            "p99_ms": round(latencies[int(n * 0.99)] * 1000, 3),
            "max_ms": round(latencies[-1] * 1000, 3)}


def in_process(n: int) -> dict[str, float]:
    """The same mix decided in process: ``ToolGuard.preflight`` with an allowing control
    verdict (the control state is a dict lookup; the policy is the work)."""
    from agentledger.producers.enforce import ToolGuard, load_gate
    from agentledger.producers.guard import ALLOW

    guard = ToolGuard(load_gate())
    samples = []
    for i in range(n + 500):
        call = MIX[i % len(MIX)]
        t0 = time.perf_counter_ns()
        guard.preflight(tenant="acme", agent="refund-agent", control=ALLOW, **call)
        samples.append(time.perf_counter_ns() - t0)
    samples = sorted(samples[500:])
    return {"p50_us": round(samples[n // 2] / 1000, 2),
            "p99_us": round(samples[int(n * 0.99)] / 1000, 2)}


def approval_longpoll(gate_url: str, keys: dict[str, str], n: int) -> dict[str, Any]:
    """A decided approval → the waiting agent: ``n`` refunds escalated to two finance
    approvers; the agent long-polls ``GET /v1/approvals/{id}?wait=30`` while both vote.
    Each latency runs from the moment the final vote is *sent* to the moment the agent's
    long-poll answers with the decision (so the vote's own processing counts)."""
    import threading

    import httpx

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[who]}"}

    latencies: list[float] = []
    with httpx.Client(base_url=gate_url, timeout=60) as http:
        for i in range(n):
            asked = http.post("/v1/gate/check", headers=auth("agent"), json={
                "run_id": f"bench-lp-{i}", "tool": "stripe", "action": "create_refund",
                "mode": "write", "args": {"id": f"ch_{i}", "amount": 450},
                "idempotency_key": f"ch_{i}:refund"}).json()
            assert asked["decision"] == "escalate", asked
            approval_id = asked["approval_id"]
            answered: list[tuple[float, dict[str, Any]]] = []

            def wait(approval_id: str = approval_id,
                     answered: list[tuple[float, dict[str, Any]]] = answered) -> None:
                with httpx.Client(base_url=gate_url, timeout=60) as poller:
                    state = poller.get(f"/v1/approvals/{approval_id}",
                                       params={"wait": 30}, headers=auth("agent")).json()
                answered.append((time.perf_counter(), state))

            deadline = time.monotonic() + 30  # approvers see a request once it landed
            while http.get(f"/v1/approvals/{approval_id}",
                           headers=auth("ana")).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"approval {approval_id} never reached the store")
                time.sleep(0.05)
            waiter = threading.Thread(target=wait)
            waiter.start()
            vote = {"reason": "bench"}
            first = http.post(f"/v1/approvals/{approval_id}/approve", headers=auth("ana"),
                              json=vote)
            assert first.status_code == 200, first.text
            final_sent = time.perf_counter()
            last = http.post(f"/v1/approvals/{approval_id}/approve", headers=auth("ben"),
                             json=vote)
            assert last.status_code == 200, last.text
            waiter.join(60)
            assert answered, f"approval {approval_id}: the long-poll never answered"
            (answered_at, state), = answered
            # checked here: an assert in the waiter would only print, and a poll that ran
            # out its 30 s would count as a latency
            assert state["status"] == "approved", state
            latencies.append(answered_at - final_sent)
    latencies.sort()
    return {"n": n, "p50_ms": round(latencies[n // 2] * 1000, 1),
            "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1)}


def measure(rate: float, seconds: float, say: Any, approvals: int = 30) -> dict[str, Any]:
    import httpx

    from agentledger.auth import new_key
    from agentledger.broker import EmbeddedBroker
    from agentledger.core.kafka import client_config, default_topics, ensure_topics

    key = new_key()
    keys = {"agent": key, "ana": new_key(), "ben": new_key()}
    bodies = [vary({**MIX[i % len(MIX)], "run_id": f"bench-run-{i % 100}"}, i)
              for i in range(1000)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        env = {**os.environ, "AGENTLEDGER_DATA_DIR": f"{tmp}/data",
               "AGENTLEDGER_KAFKA_BOOTSTRAP": broker.bootstrap, KEY_ENV: key,
               APPROVERS_ENV: f"{keys['ana']},{keys['ben']}",
               "AGENTLEDGER_GATE_STALE_AFTER_S": "3600"}
        procs = []
        try:
            gate, gate_url = start("gate", env, Path(tmp))
            procs.append(gate)
            const, const_url = start("constant", env, Path(tmp))
            procs.append(const)
            first = httpx.post(f"{gate_url}/v1/gate/check", json=bodies[0], timeout=60,
                               headers={"Authorization": f"Bearer {key}"})
            assert first.status_code == 200, first.text  # the service is made and warm
            say("warming up both servers")
            asyncio.run(drive(f"{gate_url}/v1/gate/check", key, bodies, rate, 1.0))
            asyncio.run(drive(f"{const_url}/v1/const", key, bodies, rate, 1.0))
            say(f"gate check at {rate:g}/s for {seconds:g}s")
            gate_run = asyncio.run(drive(f"{gate_url}/v1/gate/check", key, bodies, rate,
                                         seconds))
            say(f"constant route at {rate:g}/s for {seconds:g}s")
            const_run = asyncio.run(drive(f"{const_url}/v1/const", key, bodies, rate,
                                          seconds))
            for proc in procs:  # the long-poll gets a server of its own, with a sink
                proc.terminate()
                proc.wait(30)
            procs = []
            voted, voted_url = start("gate+sink", {**env, "AGENTLEDGER_DATA_DIR":
                                                   f"{tmp}/votes"}, Path(tmp))
            procs.append(voted)
            say(f"approval long-poll: {approvals} refunds, two votes each")
            longpoll = approval_longpoll(voted_url, keys, approvals)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    return {"rate": rate, "seconds": seconds, "gate_check": gate_run,
            "baseline_constant_route": const_run, "approval_longpoll": longpoll}


ADAPTER_OVERHEAD_GOAL_P99_MS = 1.0
APPROVAL_RESUME_GOAL_P99_MS = 1000.0


def _quantiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    n = len(ordered)
    return {"p50_ms": round(ordered[n // 2] / 1e6, 4),
            "p99_ms": round(ordered[min(n - 1, int(n * 0.99))] / 1e6, 4),
            "max_ms": round(ordered[-1] / 1e6, 4)}


def adapter_openai_agents(calls: int, trials: int, say: Any) -> dict[str, Any]:
    """The OpenAI Agents SDK adapter, in process, on an embedded broker (issue 24).

    Overhead: a no-op ``function_tool`` invoked as the SDK invokes it (``needs_approval``,
    then ``on_invoke_tool`` with a ``ToolContext``), gated by ``AgentsLedger.guard_tool``
    (control verdict, Cedar policy, ``tool.call`` / ``tool.result`` queued to Kafka; a
    small refund also records its allow), against the same tool unwrapped (the SDK's own
    argument parsing and the call), interleaved call by call. ``overhead`` is the paired
    difference (gated minus raw) per call. Beside it, the same call gated and recorded by
    ``ToolGuard.call`` directly (``baseline_toolguard_direct``: the SDK's own cost) and the
    adapter's share beyond it (``adapter_beyond_toolguard``, paired).

    Approval → resumed agent: a run pauses on a refund that needs two approvals; the agent
    waits in ``AgentsLedger.resume``; the final vote is published as the API does (a
    signed approval state, ``ApprovalDesk.publish``) and the clock runs from just before
    that publish until the approved tool starts running in the resumed run.
    """
    import asyncio
    from datetime import UTC, datetime

    from agents import Agent, RunConfig, function_tool
    from agents.run_context import RunContextWrapper
    from agents.testing import ScriptedModel, assistant_message, function_call
    from agents.tool_context import ToolContext
    from agents.usage import Usage

    from agentledger.api.approvals import ApprovalDesk
    from agentledger.broker import EmbeddedBroker
    from agentledger.core import signing
    from agentledger.core.kafka import client_config, default_topics, ensure_topics
    from agentledger.producers.adapters.openai_agents import AgentsLedger
    from agentledger.producers.approval_follower import ApprovalFollower
    from agentledger.producers.emitter import AgentIdentity, Ledger
    from agentledger.producers.enforce import ToolGuard, load_gate
    from agentledger.schemas.approvals import APPROVED, ApprovalState, Vote

    offline = RunConfig(tracing_disabled=True)
    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        desk_key = signing.LedgerKey.generate()
        desk = ApprovalDesk(broker.bootstrap, key=desk_key)
        ring = signing.Keyring({})
        ring.add(desk_key.public)
        approvals = ApprovalFollower(broker.bootstrap, trusted=ring).start()
        ledger = Ledger.connect(broker.bootstrap, AgentIdentity(
            tenant="acme", agent="refund-agent", agent_version="1", principal="bench"))
        al = AgentsLedger(ledger, ToolGuard(load_gate(), approvals=approvals),
                          workflow="bench_openai_agents", model_name="gpt-4o-mini")
        ran: list[float] = []

        @function_tool
        def get_charge(id: str) -> str:
            """A no-op read."""
            return id

        @function_tool
        def create_refund(charge: str, amount: int) -> str:
            """A refund that only notes when it ran."""
            ran.append(time.perf_counter())
            return charge

        gated = {"read": (get_charge, al.guard_tool(get_charge, tool_name="stripe",
                                                    action="get_charge"), {"id": "ch_1"}),
                 "money_write": (create_refund, al.guard_tool(
                     create_refund, tool_name="stripe", action="create_refund"),
                     {"charge": "ch_1", "amount": 50})}

        async def overhead(raw: Any, tool: Any, args: dict[str, Any]) -> dict[str, Any]:
            text = json.dumps(args)
            wrapper: RunContextWrapper[Any] = RunContextWrapper(context=None)
            action = "get_charge" if raw is get_charge else "create_refund"
            raw_ns, gated_ns, diff_ns, direct_ns, own_ns = [], [], [], [], []
            with ledger.run("bench_openai_agents") as run, al.bind(run):
                for i in range(calls + 500):
                    ctx = ToolContext(context=None, tool_name=raw.name,
                                      tool_call_id=f"c{i}", tool_arguments=text)
                    t0 = time.perf_counter_ns()
                    await raw.on_invoke_tool(ctx, text)
                    t1 = time.perf_counter_ns()
                    assert not await tool.needs_approval(wrapper, args, f"c{i}")
                    await tool.on_invoke_tool(ctx, text)
                    t2 = time.perf_counter_ns()
                    # the same call gated and recorded by ToolGuard directly (no adapter)
                    with al.guard.call(run, "stripe", action, mode="write", args=args,
                                       idempotency_key=f"d{i}"):
                        await raw.on_invoke_tool(ctx, text)
                    t3 = time.perf_counter_ns()
                    if i >= 500:  # warm-up
                        raw_ns.append(t1 - t0)
                        gated_ns.append(t2 - t1)
                        diff_ns.append((t2 - t1) - (t1 - t0))
                        direct_ns.append(t3 - t2)
                        own_ns.append((t2 - t1) - (t3 - t2))
                    if i % 1000 == 999:
                        ledger.flush(30)  # keep the producer's queue short, outside timing
            return {"calls": calls, "raw_tool": _quantiles(raw_ns),
                    "gated_tool": _quantiles(gated_ns), "overhead": _quantiles(diff_ns),
                    "baseline_toolguard_direct": _quantiles(direct_ns),
                    "adapter_beyond_toolguard": _quantiles(own_ns)}

        async def approval_trial() -> float:
            model = ScriptedModel([
                [function_call("create_refund", {"charge": "ch_1", "amount": 450},
                               call_id="c1")],
                [assistant_message("done")]],
                default_usage=Usage(requests=1, input_tokens=100, output_tokens=20,
                                    total_tokens=120))
            agent = Agent(name="refunds", model=model, tools=[gated["money_write"][1]])
            paused = await al.run(agent, "refund 450", run_config=offline)
            (approval_id,) = paused.approval_ids
            waiting = al.guard.waiting[approval_id]
            resumed = asyncio.create_task(al.resume(paused, wait_s=30, run_config=offline))
            await asyncio.sleep(0.05)  # the agent is in its wait before the vote lands
            now = datetime.now(UTC)
            decided = ApprovalState(
                approval_id=approval_id, tenant="acme", agent="refund-agent",
                run_id=paused.run.run_id, action="stripe:create_refund",
                approver_role=waiting.decision.approver_role or "finance",
                approvals_required=waiting.decision.approvals_required or 2,
                status=APPROVED, version=2, requested_at=waiting.requested_at,
                resolved_at=now, votes=[Vote(approver="ana@finance", decision="approve"),
                                        Vote(approver="ben@finance", decision="approve")])
            count = len(ran)
            t0 = time.perf_counter()
            await asyncio.to_thread(desk.publish, decided)
            done = await resumed
            assert not done.paused and len(ran) == count + 1, "the tool ran exactly once"
            return ran[-1] - t0

        async def measure_all() -> dict[str, Any]:
            found: dict[str, Any] = {}
            for kind, (raw, tool, args) in gated.items():
                say(f"adapter overhead, {kind}: {calls} calls")
                found[kind] = await overhead(raw, tool, args)
            say(f"approval → resumed agent: {trials} trials")
            lat = [await approval_trial() for _ in range(trials)]
            found["approval_to_resumed"] = {
                "trials": trials, **_quantiles([int(x * 1e9) for x in lat])}
            return found

        try:
            result = asyncio.run(measure_all())
            ledger.flush(30)
        finally:
            approvals.close()
            desk.close()
    worst = max(result[k]["overhead"]["p99_ms"] for k in gated)
    result["adapter_overhead_p99_ms"] = worst
    result["approval_to_resumed_p99_ms"] = result["approval_to_resumed"]["p99_ms"]
    result["goal_overhead_p99_ms"] = ADAPTER_OVERHEAD_GOAL_P99_MS
    result["goal_approval_to_resumed_p99_ms"] = APPROVAL_RESUME_GOAL_P99_MS
    result["goal_met"] = worst <= ADAPTER_OVERHEAD_GOAL_P99_MS and \
        result["approval_to_resumed_p99_ms"] <= APPROVAL_RESUME_GOAL_P99_MS
    return result


def adapter_langgraph(calls: int, trials: int, say: Any) -> dict[str, Any]:
    """The LangGraph adapter, in process, on an embedded broker (issue 24).

    Overhead: a no-op LangChain tool invoked as ``ToolNode`` invokes it (a ``ToolCall``
    and the thread's config), gated by ``LangGraphLedger.guard_tool`` (Cedar policy,
    ``tool.call`` / ``tool.result`` queued to Kafka, the callback handler; a small refund
    also records its allow), against the same tool unwrapped, interleaved call by call;
    ``overhead`` is the paired difference. Beside them, the same call gated and recorded
    by ``ToolGuard.call`` directly (``baseline_toolguard_direct``: the SDK's own cost) and
    the adapter's share beyond it (``adapter_beyond_toolguard``, paired).

    Approval → resumed graph: a compiled graph (``InMemorySaver``) pauses on a refund that
    needs two approvals (``interrupt``); ``LangGraphLedger.resume`` waits; the final vote
    is published as the API does (``ApprovalDesk.publish``) and the clock runs from just
    before that publish until the approved tool runs in the resumed graph. One unmeasured
    trial first warms the producer and the follower up.
    """
    import threading
    from datetime import UTC, datetime

    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from agentledger.api.approvals import ApprovalDesk
    from agentledger.broker import EmbeddedBroker
    from agentledger.core import signing
    from agentledger.core.kafka import client_config, default_topics, ensure_topics
    from agentledger.producers.adapters.langgraph import (
        LangGraphLedger,
        ScriptedChatModel,
        approval_ids,
    )
    from agentledger.producers.approval_follower import ApprovalFollower
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.enforce import ToolGuard, load_gate
    from agentledger.producers.identity import AgentIdentity
    from agentledger.schemas.approvals import APPROVED, ApprovalState, Vote

    ran: list[float] = []

    @tool
    def get_charge(id: str) -> str:  # the catalog's argument name
        """A no-op read."""
        return id

    @tool
    def create_refund(charge: str, amount: int) -> str:
        """A refund that only notes when it ran."""
        ran.append(time.perf_counter())
        return charge

    with EmbeddedBroker() as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        desk_key = signing.LedgerKey.generate()
        desk = ApprovalDesk(broker.bootstrap, key=desk_key)
        approvals = ApprovalFollower(broker.bootstrap, trusted=desk_key.keyring()).start()
        ledger = Ledger.connect(broker.bootstrap, AgentIdentity(
            tenant="acme", agent="refund-agent", agent_version="1", principal="bench"))
        guard = ToolGuard(load_gate(), approvals=approvals)
        lg = LangGraphLedger(ledger, guard, workflow="bench_langgraph")
        kinds: dict[str, tuple[Any, str, dict[str, Any]]] = {
            "read": (get_charge, "get_charge", {"id": "ch_1"}),
            "money_write": (create_refund, "create_refund",
                            {"charge": "ch_1", "amount": 50})}

        def overhead(raw: Any, action: str, args: dict[str, Any]) -> dict[str, Any]:
            gated = lg.guard_tool(raw, tool_name="stripe", action=action)
            config = lg.config(f"bench-{action}")
            plain = {"configurable": {"thread_id": "bench-raw"}}
            raw_ns, gated_ns, diff_ns, direct_ns, own_ns = [], [], [], [], []
            with ledger.run("bench_toolguard") as direct_run:
                for i in range(calls + 500):
                    call = {"name": raw.name, "args": args, "id": f"c{i}",
                            "type": "tool_call"}
                    t0 = time.perf_counter_ns()
                    raw.invoke(call, plain)
                    t1 = time.perf_counter_ns()
                    gated.invoke(call, config)
                    t2 = time.perf_counter_ns()
                    # the same call gated and recorded by ToolGuard directly (no adapter)
                    with guard.call(direct_run, "stripe", action, mode="write", args=args,
                                    idempotency_key=f"d{i}"):
                        raw.invoke(call, plain)
                    t3 = time.perf_counter_ns()
                    if i >= 500:  # warm-up
                        raw_ns.append(t1 - t0)
                        gated_ns.append(t2 - t1)
                        diff_ns.append((t2 - t1) - (t1 - t0))
                        direct_ns.append(t3 - t2)
                        own_ns.append((t2 - t1) - (t3 - t2))
                    if i % 1000 == 999:
                        ledger.flush(30)  # keep the producer's queue short, outside timing
            lg.finish(f"bench-{action}")
            return {"calls": calls, "raw_tool": _quantiles(raw_ns),
                    "gated_tool": _quantiles(gated_ns), "overhead": _quantiles(diff_ns),
                    "baseline_toolguard_direct": _quantiles(direct_ns),
                    "adapter_beyond_toolguard": _quantiles(own_ns)}

        refund = lg.guard_tool(create_refund, tool_name="stripe", action="create_refund")

        def turns() -> Any:
            while True:
                yield ScriptedChatModel.says(tool_calls=[{
                    "name": "create_refund", "id": "c1",
                    "args": {"charge": "ch_1", "amount": 450}}])
                yield ScriptedChatModel.says("done")

        model = ScriptedChatModel(messages=turns())
        graph = StateGraph(MessagesState)
        graph.add_node("agent", lambda s: {"messages": [model.invoke(s["messages"])]})
        graph.add_node("tools", ToolNode([refund]))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        app = graph.compile(checkpointer=InMemorySaver())

        def approval_trial(n: int) -> float:
            thread = f"bench-approval-{n}"
            paused = lg.invoke(app, {"messages": [HumanMessage("refund 450")]}, thread)
            (approval_id,) = approval_ids(paused)
            waiting = guard.waiting[approval_id]
            resumed = threading.Thread(target=lg.resume, args=(app, thread),
                                       kwargs={"wait_s": 30})
            resumed.start()
            time.sleep(0.05)  # the graph is in its wait before the vote lands
            now = datetime.now(UTC)
            decided = ApprovalState(
                approval_id=approval_id, tenant="acme", agent="refund-agent",
                run_id=lg.run(thread).run_id, action="stripe:create_refund",
                approver_role=waiting.decision.approver_role or "finance",
                approvals_required=waiting.decision.approvals_required or 2,
                status=APPROVED, version=2, requested_at=waiting.requested_at,
                resolved_at=now, votes=[Vote(approver="ana@finance", decision="approve"),
                                        Vote(approver="ben@finance", decision="approve")])
            count = len(ran)
            t0 = time.perf_counter()
            desk.publish(decided)
            resumed.join(60)
            assert thread not in lg.threads and len(ran) == count + 1, \
                "the graph resumed, finished, and the tool ran exactly once"
            return ran[-1] - t0

        try:
            result: dict[str, Any] = {}
            for kind, (raw, action, args) in kinds.items():
                say(f"adapter overhead, {kind}: {calls} calls")
                result[kind] = overhead(raw, action, args)
            say(f"approval → resumed graph: {trials} trials")
            approval_trial(0)
            lat = [approval_trial(n) for n in range(1, trials + 1)]
            result["approval_to_resumed"] = {
                "trials": trials, **_quantiles([int(x * 1e9) for x in lat])}
            ledger.flush(30)
        finally:
            approvals.close()
            desk.close()
    worst = max(result[k]["overhead"]["p99_ms"] for k in kinds)
    result["adapter_overhead_p99_ms"] = worst
    result["approval_to_resumed_p99_ms"] = result["approval_to_resumed"]["p99_ms"]
    result["goal_overhead_p99_ms"] = ADAPTER_OVERHEAD_GOAL_P99_MS
    result["goal_approval_to_resumed_p99_ms"] = APPROVAL_RESUME_GOAL_P99_MS
    result["goal_met"] = worst <= ADAPTER_OVERHEAD_GOAL_P99_MS and \
        result["approval_to_resumed_p99_ms"] <= APPROVAL_RESUME_GOAL_P99_MS
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--adapter-openai-agents", action="store_true",
                        help="measure the OpenAI Agents SDK adapter instead (in process)")
    parser.add_argument("--adapter-langgraph", action="store_true",
                        help="measure the LangGraph adapter instead (in process)")
    parser.add_argument("--calls", type=int, default=5000,
                        help="adapter: tool calls per kind (read, money write)")
    parser.add_argument("--approval-trials", type=int, default=30,
                        help="adapter: approval → resumed agent trials")
    parser.add_argument("--serve", choices=["gate", "gate+sink", "constant"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--url-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.url_file)
        return 0

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr)

    if args.adapter_openai_agents or args.adapter_langgraph:
        measure_adapter = adapter_langgraph if args.adapter_langgraph else \
            adapter_openai_agents
        result = measure_adapter(args.calls, args.approval_trials, say)
        if not args.json:
            for name, value in result.items():
                print(f"{name:>32}: {value}")
        print(json.dumps(result))
        return 0 if result["goal_met"] else 1
    result = measure(args.rate, args.seconds, say, args.approval_trials)
    result["baseline_toolguard_decision"] = in_process(20_000)
    result["approval_longpoll_p99_ms"] = result["approval_longpoll"]["p99_ms"]
    result["approval_goal_p99_ms"] = APPROVAL_RESUME_GOAL_P99_MS
    result["gate_check_p99_ms"] = result["gate_check"]["p99_ms"]
    result["goal_p99_ms"] = GOAL_P99_MS
    result["goal_met"] = result["gate_check_p99_ms"] <= GOAL_P99_MS and \
        not result["gate_check"]["errors"] and \
        result["approval_longpoll_p99_ms"] <= APPROVAL_RESUME_GOAL_P99_MS
    if not args.json:
        for name, value in result.items():
            print(f"{name:>28}: {value}")
    print(json.dumps(result))
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
