"""The web console's speed: each page's server time over a big store, beside the JSON API
route it reads, and how fast a vote reaches the agent that waits for it.

    .venv/bin/python bench/bench_console.py [--events 10000000] [--iterations 40] [--json]

The store is built as ``bench_queries.py`` builds it (the real SDK's simulated runs for 20
tenants over 30 days, straight into the embedded chdb store, materialized views filled),
then a few hundred approval requests are added for the signed-in approver's tenant. The
API (with the console) serves it on loopback; a session is made by signing in with a
tenant key that holds the ``finance`` role, as a person would.

- ``page_p95_ms``: the slowest console page's p95 (inbox, runs, a run page, search and
  its second page), timed over HTTP on loopback (so an upper bound of server time), goal
  ≤ 200 ms at 10M events. Beside each page: the JSON route(s) it reads, timed the same way.
- ``vote_to_agent_ms``: from sending the final (second) approval until an agent-side
  :class:`agentledger.producers.approval_follower.ApprovalFollower` holds the approved
  state, over a real Tansu broker — goal p99 ≤ 1000 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import orjson
from bench_queries import load, pct, timed

from agentledger.auth import KeyRing, entry_for, new_key
from agentledger.broker import EmbeddedBroker
from agentledger.core import signing
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.schemas.event_row import EVENT_COLUMNS, event_row
from agentledger.services import start_api

TENANT = "tenant-00"


def approval_rows(count: int, offset: int) -> tuple[list[list[Any]], list[str]]:
    """``count`` runs of TENANT each asking finance for two approvals (escalation,
    request), as the SDK records them; the rows and the approval ids."""
    from agentledger.producers.emitter import AgentIdentity
    from agentledger.producers.memory import MemoryLedger

    ledger = MemoryLedger(AgentIdentity(tenant=TENANT, agent="refund-agent",
                                        agent_version="1", principal="svc"), validate=False)
    ids = []
    for i in range(count):
        run = ledger.run("refund_with_approval")
        run.__enter__()
        run.emit("policy.decision", {
            "policy_id": "agentledger.gate", "policy_version": "bench", "decision": "escalate",
            "rule": "refund-over-threshold", "action": "stripe:create_refund",
            "reason": "refunds over 200 USD move real money: two finance approvers"})
        aid = f"bench-{offset + i:06d}"
        run.emit("approval.requested", {
            "approver": "finance", "action": "stripe:create_refund", "reason": "over 200",
            "approval_id": aid, "approvals_required": 2, "sla_s": 900.0,
            "expires_in_s": 3600.0, "args": {"id": f"ch_{i}", "amount": 450}})
        ids.append(aid)
    rows = [event_row(orjson.loads(raw), raw, 9, offset + n)
            for n, raw in enumerate(ledger.take())]
    return rows, ids


def sign_in(base: str, key: str) -> httpx.Client:
    http = httpx.Client(base_url=base, timeout=120, follow_redirects=False)
    form = http.get("/console/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    done = http.post("/console/signin", data={"key": key, "csrf": token.group(1)})
    assert done.status_code == 303, done.text[:500]
    return http


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--votes", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default=None,
                        help="keep the store here (default: temp); a store already there "
                             "is reused (--events is then ignored)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    base = Path(args.dir or tempfile.mkdtemp(prefix="al-bench-console-"))
    chunks = base / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_file=None) as broker:
        ensure_topics(client_config(broker.bootstrap, "admin"), default_topics(3))
        settings = Settings(data_dir=base / "data", kafka_bootstrap=broker.bootstrap)
        os.environ.update(AGENTLEDGER_DATA_DIR=str(settings.data_dir),
                          AGENTLEDGER_KAFKA_BOOTSTRAP=broker.bootstrap,
                          AGENTLEDGER_LEDGER_KEY_DIR=str(signing.key_dir(settings)))
        signing.ledger_key(settings)
        t0 = time.perf_counter()
        reused = (settings.data_dir / "chdb").exists()
        if not reused:
            load(settings, chunks, args.events, args.workers)
        build_s = time.perf_counter() - t0
        client = client_for(settings)
        asked = client.command("SELECT count() FROM events WHERE event_type = "
                               "'approval.requested' AND tenant = {t:String} AND "
                               "startsWith(JSONExtractString(body, 'approval_id'), 'bench-')",
                               parameters={"t": TENANT})
        rows, ids = approval_rows(300 + args.votes if not asked else args.votes, int(asked))
        client.insert("events", rows, column_names=list(EVENT_COLUMNS))
        n = client.command("SELECT count() FROM events")
        deadline = time.monotonic() + 120
        while client.command("SELECT count() FROM system.merges") and \
                time.monotonic() < deadline:
            time.sleep(1)
        sample = client.query("SELECT run_id FROM events WHERE seq = 0 AND tenant = "
                              "{t:String} ORDER BY rand() LIMIT 100",
                              parameters={"t": TENANT}).result_rows
        keys = {k: new_key() for k in ("ana", "ben")}
        ring = KeyRing([entry_for(f"{k}@finance", v, [TENANT], roles=["finance"])
                        for k, v in keys.items()])
        api = start_api(settings, client, keys=ring, host="127.0.0.1", port=0)
        rng = random.Random(7)
        page = sign_in(api.url, keys["ana"])
        raw = httpx.Client(base_url=api.url, timeout=120,
                           headers={"Authorization": f"Bearer {keys['ana']}"})

        def get(http: httpx.Client, path: str) -> None:
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])

        def run_id() -> str:
            return str(sample[rng.randrange(len(sample))][0])

        first = raw.get("/v1/events", params={"tenant": TENANT, "since": "30d",
                                              "limit": 50}).json()
        cursor = first["next_cursor"]
        def on(http: httpx.Client, path: Any) -> Any:
            return lambda: get(http, path() if callable(path) else path)

        search = f"tenant={TENANT}&since=30d"
        cases: dict[str, tuple[Any, list[tuple[str, Any]]]] = {
            "inbox": (on(page, "/console/inbox"), [
                ("GET /v1/approvals", on(raw, "/v1/approvals?since=7d&limit=200"))]),
            "runs": (on(page, "/console/runs"), [
                ("GET /v1/events?event_type=run.finished",
                 on(raw, "/v1/events?event_type=run.finished&limit=50"))]),
            "run page": (on(page, lambda: f"/console/runs/{run_id()}"), [
                ("GET /v1/timeline/{run}", on(raw, lambda: f"/v1/timeline/{run_id()}")),
                ("GET /v1/verify/{run}", on(raw, lambda: f"/v1/verify/{run_id()}"))]),
            "search": (on(page, f"/console/search?{search}"), [
                ("GET /v1/events", on(raw, f"/v1/events?{search}&limit=50"))]),
            "search, next page": (on(page, f"/console/search?{search}&cursor={cursor}"), [
                ("GET /v1/events?cursor",
                 on(raw, f"/v1/events?{search}&limit=50&cursor={cursor}"))]),
        }
        pages: dict[str, Any] = {}
        for name, (fn, routes) in cases.items():
            samples = timed(fn, args.iterations)
            pages[name] = {"p50": round(pct(samples, .5), 1), "p95": round(pct(samples, .95), 1),
                           "api": {route: round(pct(timed(call, args.iterations), .95), 1)
                                   for route, call in routes}}

        from agentledger.producers.approval_follower import ApprovalFollower

        latencies = []
        with ApprovalFollower(broker.bootstrap) as follower:
            follower.wait_caught_up(30)
            for aid in ids[-args.votes:]:
                ok = raw.post(f"/v1/approvals/{aid}/approve", json={"reason": "bench"})
                assert ok.status_code == 200, ok.text[:300]
                t = time.perf_counter()
                final = httpx.post(f"{api.url}/v1/approvals/{aid}/approve",
                                   json={"reason": "bench"}, timeout=60,
                                   headers={"Authorization": f"Bearer {keys['ben']}"})
                while (state := follower.get(aid)) is None or state.status != "approved":
                    if time.perf_counter() - t > 10:
                        raise SystemExit(f"the agent never saw {aid} approved")
                    time.sleep(0.001)
                latencies.append((time.perf_counter() - t) * 1000)
                assert final.status_code == 200, final.text[:300]
        page.close()
        raw.close()
        api.stop()

    slowest = max(pages, key=lambda k: pages[k]["p95"])
    built = "reused" if reused else f"built in {build_s:.0f} s"
    print(f"\nstore: {n:,} events ({built}); tenant {TENANT}; "
          f"{args.iterations} iterations per page; cores: {os.cpu_count()}")
    print(f"{'page':<20} {'p50 ms':>8} {'p95 ms':>8}   JSON route it reads (p95 ms)")
    for name, found in pages.items():
        beside = ", ".join(f"{r} {ms}" for r, ms in found["api"].items())
        print(f"{name:<20} {found['p50']:8.1f} {found['p95']:8.1f}   {beside}")
    print(f"\nslowest page: {slowest}, p95 {pages[slowest]['p95']} ms (goal ≤ 200 at 10M)")
    print(f"vote → waiting agent: p50 {pct(latencies, .5):.1f} ms, "
          f"p99 {pct(latencies, .99):.1f} ms over {len(latencies)} votes (goal p99 ≤ 1000)")
    if args.json:
        print(json.dumps({
            "events": n, "page_p95_ms": pages[slowest]["p95"], "slowest_page": slowest,
            "pages_ms": pages,
            "vote_to_agent_ms": {"p50": round(pct(latencies, .5), 1),
                                 "p99": round(pct(latencies, .99), 1),
                                 "votes": len(latencies)},
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
