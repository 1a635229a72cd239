"""The ``agentledger`` command line. Every command explains itself with ``--help``."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentledger import cli_control, cli_intake
from agentledger.cli_approvals import approvals_app
from agentledger.cli_policy import policy_app
from agentledger.watch import watch as watch_command
from core import discovery, logs
from core.settings import Settings, load_settings

app = typer.Typer(
    name="agentledger",
    help="An accountable execution ledger and control loop for production AI agents.\n\n"
    "Agents emit events to Kafka; a sink lands them in ClickHouse, where you query them. "
    "Configuration comes from AGENTLEDGER_* environment variables; the defaults run an "
    "embedded broker (Tansu) and an embedded ClickHouse engine (chdb) under ./.agentledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 160  # piped or captured output: wide tables rather than truncated cells
err = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_json)
    return settings


def _bootstrap(settings: Settings) -> str:
    bootstrap = discovery.bootstrap_servers(settings)
    if not bootstrap:
        raise UserError("no Kafka broker: start `agentledger up` in another terminal, "
                        "or set AGENTLEDGER_KAFKA_BOOTSTRAP")
    return bootstrap


def _print_json(value: Any) -> None:
    from agentledger.api import _default

    sys.stdout.write(json.dumps(value, default=_default) + "\n")


# -- the stack ---------------------------------------------------------------------------


@app.command()
def up(
    broker_port: Annotated[int, typer.Option(help="embedded broker port (0 = a free one)")] = 0,
) -> None:
    """Run the embedded stack in the foreground: broker, sink, store API, stream worker.

    Prints the Kafka bootstrap address, the ClickHouse DSN and the API URL. Ctrl-C or
    SIGTERM stops everything in order (sink flushes and commits first).
    """
    from agentledger.services import stop_on_signals
    from agentledger.supervisor import Supervisor

    settings = _settings(broker_port=broker_port or None)
    supervisor = Supervisor(settings, say=lambda line: out.print(line, highlight=False))
    with stop_on_signals(supervisor.stop):
        code = supervisor.run()
    raise typer.Exit(code)


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = a free one)")] = 9092,
) -> None:
    """Run only the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    import threading

    from agentledger.broker import EmbeddedBroker
    from agentledger.services import stop_on_signals
    from core.kafka import client_config, default_topics, ensure_topics

    settings = _settings()
    stop = threading.Event()
    with EmbeddedBroker(port, log_file=None) as embedded, stop_on_signals(stop.set):
        ensure_topics(client_config(embedded.bootstrap, "admin"),
                      default_topics(settings.events_partitions))
        discovery.publish(settings, discovery.BROKER_FILE, {"bootstrap": embedded.bootstrap})
        out.print(f"kafka bootstrap: {embedded.bootstrap}", highlight=False)
        try:
            stop.wait()
        finally:
            discovery.withdraw(settings, discovery.BROKER_FILE)


@app.command()
def sink(
    api: Annotated[bool | None, typer.Option(
        "--api/--no-api",
        help="serve the store API from this process (default: on for an embedded store)")] = None,
    max_idle: Annotated[float | None, typer.Option(
        help="exit after this many seconds without messages", hidden=True)] = None,
) -> None:
    """Run the Kafka → ClickHouse sink until SIGTERM (then it flushes and commits).

    Creates the topics and the ClickHouse schema if missing. For production, set
    AGENTLEDGER_KAFKA_BOOTSTRAP and AGENTLEDGER_CLICKHOUSE_DSN=http://user:pass@host:8123/db;
    run more sinks in the same consumer group to scale out.
    """
    from agentledger.services import run_sink_service

    settings = _settings()
    stats = run_sink_service(settings, _bootstrap(settings),
                             serve_api=settings.embedded_store if api is None else api,
                             max_idle_s=max_idle)
    err.print(f"sink stopped: {stats.as_dict()}", highlight=False)


# -- producing ---------------------------------------------------------------------------


@app.command()
def simulate(
    runs: Annotated[int, typer.Option(min=1, help="how many agent runs")] = 100,
    rate: Annotated[float, typer.Option(min=0, help="runs per second (0 = as fast as possible)")]
    = 0.0,
    seed: Annotated[int, typer.Option(help="random seed; same seed, same runs")] = 0,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="tool failure probability")]
    = 0.02,
    scenario: Annotated[str | None, typer.Option(
        help="a scripted scenario in event time instead of --runs: healthy, tool-outage or "
        "runaway. Agents obey the control loop (run `agentledger streams` or `up`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")]
    = False,
) -> None:
    """Drive the SDK with realistic agent runs (ticket triage, CRM update, refund with
    approval) and wait until Kafka acknowledged every event."""
    from rich.progress import Progress

    from core.kafka import client_config, default_topics, ensure_topics
    from producers.emitter import Ledger
    from producers.simulator import Simulator

    settings = _settings()
    bootstrap = _bootstrap(settings)
    ensure_topics(client_config(bootstrap, "admin", extra=settings.kafka_security),
                  default_topics(settings.events_partitions))
    if scenario is not None:
        _simulate_scenario(settings, bootstrap, scenario, seed, as_json)
        return
    sim = Simulator(lambda ident: Ledger.connect(
        bootstrap, ident, redact_keys=settings.redact_keys,
        producer_overrides=settings.kafka_security), seed=seed, error_rate=error_rate)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("simulating runs", total=runs)
        result = sim.run(runs, rate=rate, progress=lambda n: progress.advance(task, n))
    if as_json:
        _print_json({"events": result.events, "runs": result.runs})
    else:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        out.print(f"delivered {result.events} events from {result.runs} runs ({outcomes})",
                  highlight=False)


def _simulate_scenario(settings: Settings, bootstrap: str, name: str, seed: int,
                       as_json: bool) -> None:
    from rich.progress import Progress

    from producers.emitter import Ledger
    from producers.guard import ControlFollower
    from producers.scenarios import SCENARIOS, run_scenario

    if name not in SCENARIOS:
        raise UserError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    with ControlFollower(bootstrap, security=settings.kafka_security) as follower:
        if not follower.wait_for(lambda: follower.event_time > 0 or bool(follower.heartbeats),
                                 timeout_s=60):
            raise UserError("no stream worker heartbeat on agent.control within 60s: start "
                            "`agentledger streams` (or `agentledger up`) first")
        with Progress(console=err, transient=True, disable=as_json) as progress:
            task = progress.add_task(f"scenario {name}", total=None)
            result = run_scenario(
                name, lambda ident, clock: Ledger.connect(
                    bootstrap, ident, redact_keys=settings.redact_keys, clock=clock,
                    producer_overrides=settings.kafka_security),
                follower=follower, seed=seed, progress=lambda n: progress.advance(task, n))
    if as_json:
        _print_json(result.as_dict())
        return
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(result.refusals.items())) or "none"
    out.print(f"scenario {name}: {result.events} events, {result.runs} runs ({outcomes}); "
              f"refused by the control loop: {refusals}", highlight=False)


# -- the control loop --------------------------------------------------------------------


@app.command()
def streams(
    policy: Annotated[str | None, typer.Option(
        help="control policy YAML (default: AGENTLEDGER_POLICY_FILE or the packaged one)")]
    = None,
) -> None:
    """Run a stream worker: tool health, breakers, safe mode, budgets, unit economics.

    Reads agent.events, publishes signals to agent.control and metrics to agent.metrics.
    Run more workers with the same AGENTLEDGER_STREAMS_GROUP to share the partitions.
    A policy file that does not validate is refused with its line and reason.
    """
    from streams.app import run_worker
    from streams.policy import load_policy

    settings = _settings()
    loaded = load_policy(policy or settings.policy_file)
    run_worker(settings, _bootstrap(settings), loaded)


def _read_control(settings: Settings, timeout_s: float = 3.0) -> Any:
    from producers.guard import ControlFollower

    follower = ControlFollower(_bootstrap(settings), security=settings.kafka_security).start()
    # the compacted topic is small: read until it has been quiet for a moment
    follower.wait_for(lambda: follower.last_heard and follower.silent_for > 0.5, timeout_s)
    follower.close()
    return follower


control_app = typer.Typer(help="Control-loop state (no subcommand), why a scope is in its "
                          "state (explain), and policy backtests.")
app.add_typer(control_app, name="control")
control_app.command("explain")(cli_control.explain)
control_app.command("backtest")(cli_control.backtest)


@control_app.callback(invoke_without_command=True)
def control(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array of scopes")] = False,
    heartbeats: Annotated[bool, typer.Option(help="also list stream worker heartbeats")]
    = False,
) -> None:
    """Current state of every scope on agent.control: breakers, safe modes, budgets,
    overrides (and, with --heartbeats, the stream workers)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    follower = _read_control(settings)
    signals = sorted(follower.state.values(), key=lambda s: (s.kind, s.scope, s.rule))
    if heartbeats:
        signals += sorted(follower.heartbeats.values(), key=lambda s: s.scope)
    rows = [{"kind": s.kind, "scope": s.scope, "rule": s.rule, "state": s.state,
             "version": s.version, "since": s.ts.isoformat(), "reason": s.reason,
             "policy_version": s.policy_version, "fallback": s.fallback,
             "triggered_by": s.triggered_by} for s in signals]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no control state yet (is `agentledger streams` running?)", highlight=False)
        return
    table = Table(title="control state", title_justify="left")
    for column in ("kind", "scope", "rule", "state", "version", "since", "reason"):
        table.add_column(column, justify="right" if column == "version" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("kind", "scope", "rule", "state", "version",
                                               "since", "reason")))
    out.print(table)


safe_mode_app = typer.Typer(help="Manual safe-mode overrides for an agent (tenant/agent).",
                            no_args_is_help=True)
app.add_typer(safe_mode_app, name="safe-mode")
app.command("intake")(cli_intake.intake)


def _publish_override(scope: str, state: str, reason: str) -> dict[str, Any]:
    import time
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from core.kafka import client_config
    from schemas import topics
    from schemas.signals import ControlSignal

    parts = scope.split("/")
    if len(parts) != 2 or not all(parts) or "*" in scope:
        raise UserError(f"scope must be TENANT/AGENT, got {scope!r}")
    if not reason.strip():
        raise UserError("--reason is required: say why, it is kept in the ledger")
    settings = _settings()
    signal = ControlSignal(
        kind="override", scope=scope, state=state, version=time.time_ns() // 1_000_000,
        ts=datetime.now(UTC), reason=reason, policy_version="manual",
        details={"by": os.environ.get("USER", "unknown")})
    producer = Producer(client_config(_bootstrap(settings), "producer",
                                      extra=settings.kafka_security))
    producer.produce(topics.CONTROL, signal.to_json(), signal.key.encode())
    if producer.flush(15):
        raise UserError("Kafka did not acknowledge the override within 15s")
    return {"key": signal.key, "state": state, "version": signal.version, "reason": reason}


@safe_mode_app.command("set")
def safe_mode_set(
    scope: Annotated[str, typer.Argument(help="TENANT/AGENT")],
    reason: Annotated[str, typer.Option(help="why (recorded with the signal)")],
    mode: Annotated[str, typer.Option(help="read_only, halted, or normal (pin normal)")]
    = "read_only",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Force an agent into a mode until `safe-mode clear`, whatever the rules decide."""
    if mode not in ("read_only", "halted", "normal"):
        raise UserError(f"--mode must be read_only, halted or normal, got {mode!r}")
    done = _publish_override(scope, mode, reason)
    if as_json:
        _print_json(done)
    else:
        out.print(f"override {scope}: {mode} (version {done['version']})", highlight=False)


@safe_mode_app.command("clear")
def safe_mode_clear(
    scope: Annotated[str, typer.Argument(help="TENANT/AGENT")],
    reason: Annotated[str, typer.Option(help="why (recorded with the signal)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove a manual override; the policy's automatic safe mode applies again."""
    done = _publish_override(scope, "cleared", reason)
    if as_json:
        _print_json(done)
    else:
        out.print(f"override {scope}: cleared (version {done['version']})", highlight=False)


# -- querying ----------------------------------------------------------------------------


def _parse_params(params: list[str]) -> dict[str, str]:
    parsed = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UserError(f"--param takes name=value, got {item!r}")
        parsed[name] = value
    return parsed


def _show(result: Any, as_json: bool, title: str | None = None) -> None:
    if as_json:
        _print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return
    if not result.rows and title:
        out.print(f"{title}: none", highlight=False)
        return
    table = Table(title=title, title_justify="left")
    for name, kind in zip(result.columns, result.types, strict=True):
        numeric = any(t in kind for t in ("Int", "Float", "Decimal"))
        table.add_column(name, justify="right" if numeric else "left")
    for row in result.rows:
        table.add_row(*("" if v is None else (f"{v:,.4f}" if isinstance(v, float) else str(v))
                        for v in row))
    out.print(table)


def _ledger(settings: Settings | None = None) -> Any:
    from agentledger.client import open_ledger

    return open_ledger(settings or _settings())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, list | dict):
        return json.dumps(value)[:80]
    return str(value)


_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?$")


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None,
           empty: str = "nothing found") -> None:
    if not rows:
        out.print(f"{title + ': ' if title else ''}{empty}", highlight=False)
        return
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        values = [r.get(column) for r in rows if r.get(column) not in (None, "")]
        numeric = bool(values) and all(
            (isinstance(v, int | float) and not isinstance(v, bool))
            or (isinstance(v, str) and _NUMBER.match(v)) for v in values)
        table.add_column(column, justify="right" if numeric else "left", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
SinceOpt = Annotated[str | None, typer.Option(
    help="from: 7d, 24h, 30m (ago), or an ISO date/datetime (UTC)")]
UntilOpt = Annotated[str | None, typer.Option(help="to (exclusive): same forms as --since")]
TenantOpt = Annotated[str | None, typer.Option(help="only this tenant")]


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one read-only statement (SELECT, WITH, SHOW…)")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="bind name=value for {name:Type} placeholders")] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="refuse results larger than this")]
    = 10_000,
    as_json: JsonFlag = False,
) -> None:
    """Run a read-only SQL query against the ledger store (needs an operator key).

    Works while `agentledger up` owns the embedded store (the query goes to its API).
    Statements that write are refused, by a check here and by ClickHouse's readonly mode.
    """
    with _ledger() as ledger:
        result = ledger.query(query, _parse_params(param or []), max_rows=max_rows)
    _show(result, as_json)


@app.command()
def summary(as_json: JsonFlag = False) -> None:
    """Ingestion summary: events by type, runs by outcome, cost by workflow, rejects."""
    from agentledger.query import SUMMARY_QUERIES

    with _ledger() as ledger:
        results = {title: ledger.query(q) for title, q in SUMMARY_QUERIES.items()}
    if as_json:
        _print_json({title: [dict(zip(r.columns, row, strict=True)) for row in r.rows]
                     for title, r in results.items()})
        return
    for title, result in results.items():
        _show(result, False, title=title)


@app.command()
def search(
    tenant: TenantOpt = None,
    agent: Annotated[str | None, typer.Option(help="agent name")] = None,
    tool: Annotated[str | None, typer.Option(help="tool name")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="e.g. tool.result")] = None,
    status: Annotated[str | None, typer.Option(help="ok, error, timeout, rejected")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="success, failure, aborted, rolled_back")] = None,
    trace: Annotated[str | None, typer.Option(help="trace id (32 hex)")] = None,
    run: Annotated[str | None, typer.Option(help="run id")] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow name")] = None,
    text: Annotated[str | None, typer.Option(help="text in errors (case-insensitive)")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="events per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
    oldest_first: Annotated[bool, typer.Option(help="sort oldest first")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search events by tenant, agent, tool, type, status, outcome, ids, error text, time.

    Newest first; prints a cursor for the next page.
    """
    with _ledger() as ledger:
        page = ledger.get("/v1/events", tenant=tenant, agent=agent, tool=tool,
                          event_type=event_type, status=status, outcome=outcome,
                          trace_id=trace, run_id=run, workflow=workflow, q=text, since=since,
                          until=until, limit=limit, cursor=cursor,
                          order="asc" if oldest_first else "desc")
    if as_json:
        _print_json(page)
        return
    _table(page["events"], ["ts", "tenant", "agent", "event_type", "tool", "status",
                            "outcome", "error_type", "cost_usd", "latency_ms", "run_id"],
           title="events", empty="no events match")
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@app.command()
def trace(
    ref: Annotated[str, typer.Argument(help="a trace id or a run id")],
    as_json: JsonFlag = False,
) -> None:
    """The timeline of a run (or every run of a trace): inputs, retrieval, model calls,
    tool calls, policy decisions and approvals, outcome — with latencies and costs."""
    with _ledger() as ledger:
        found = ledger.get(f"/v1/timeline/{_ref(ref)}")
    if as_json:
        _print_json(found)
        return
    for run in found["runs"]:
        out.print(f"[bold]run {run['run_id']}[/] {run['tenant']}/{run['agent']} "
                  f"{run['workflow'] or '?'} → {run['outcome'] or 'unfinished'}  "
                  f"trace {run['trace_id']}  cost ${run['cost_usd']:.6f}  "
                  f"{run['duration_ms']:.0f} ms", highlight=False)
        _table(run["steps"], ["seq", "offset_ms", "phase", "what", "latency_ms", "cost_usd"])


def _ref(ref: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}", ref):
        raise UserError(f"not a run or trace id: {ref!r}")
    return ref


@app.command()
def replay(
    ref: Annotated[str, typer.Argument(help="a run id or a trace id")],
    output: Annotated[str, typer.Option("--output", "-o", help="file to write ('-' = stdout)")],
) -> None:
    """Write the replay bundle of a run (or of every run of a trace) as one JSON document:
    ordered events, input hash and reference, retrieved document hashes and index version,
    tool schema hashes and versions, models, prompt and policy versions, verification.

    Exits 1 when the stored chain does not verify (the bundle is written anyway).
    """
    with _ledger() as ledger:
        bundle = ledger.get(f"/v1/replay/{_ref(ref)}")
    text = json.dumps(bundle, indent=2, default=str) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w") as handle:
            handle.write(text)
        runs = bundle["runs"]
        err.print(f"wrote {output}: {len(runs)} run(s), "
                  f"{sum(len(r['events']) for r in runs)} events, chain "
                  f"{'verified' if bundle['verified'] else 'BROKEN'}", highlight=False)
    if not bundle["verified"]:
        raise typer.Exit(1)


@app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="a run id or a trace id")],
    as_json: JsonFlag = False,
) -> None:
    """Verify the stored hash chain of a run (or every run of a trace).

    Detects modified, deleted, inserted and reordered events and columns edited in place;
    exits 1 and names the first broken link.
    """
    with _ledger() as ledger:
        result = ledger.get(f"/v1/verify/{_ref(ref)}")
    if as_json:
        _print_json(result)
    else:
        for run in result["runs"]:
            if run["ok"]:
                out.print(f"run {run['run_id']}: ok, {run['events']} events chained"
                          f"{'' if run.get('complete') else ' (run not finished)'}",
                          highlight=False)
                if run.get("custody"):
                    out.print(f"  custody from {run['custody']}", highlight=False)
            else:
                out.print(f"run {run['run_id']}: BROKEN at seq {run['broken_seq']} "
                          f"(event {run['broken_event_id']}): {run['problem']}",
                          highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def margins(
    by: Annotated[str, typer.Option(help="workflow, tenant, agent, model or day")] = "workflow",
    since: SinceOpt = "30d",
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    workflow: Annotated[str | None, typer.Option(help="only this workflow")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cost per successful task, success rate and gross margin (revenue per successful
    task from `agentledger revenue`, minus cost), grouped as asked."""
    with _ledger() as ledger:
        found = ledger.get("/v1/margins", by=by, since=since, until=until, tenant=tenant,
                           workflow=workflow)
    if as_json:
        _print_json(found)
        return
    def money(v: float | None, places: int = 2) -> str:
        return "" if v is None else f"{v:,.{places}f}"

    shown = [{
        by: g["key"], "runs": g["runs"], "ok": g["successes"],
        "ok %": "" if g["success_rate"] is None else f"{g['success_rate']:.1%}",
        "cost $": money(g["cost_usd"]), "$ per ok": money(g["cost_per_success_usd"], 4),
        "revenue $": money(g["revenue_usd"]), "margin $": money(g["gross_margin_usd"]),
        "margin %": "" if g["gross_margin_pct"] is None else f"{g['gross_margin_pct']:.1f}%",
    } for g in [*found["groups"], found["total"]]]
    _table(shown, list(shown[0]), title=f"margins by {by}, USD")


@app.command()
def export(
    output: Annotated[str, typer.Option("--output", "-o", help="file to write")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (exact events) or parquet")]
    = "jsonl",
    page_rows: Annotated[int, typer.Option(min=1, max=100_000, help="rows per request")]
    = 50_000,
) -> None:
    """Audit export of events in a time range: JSONL of the exact stored events (their hash
    chain verifies) or Parquet of every column. Shows progress; safe to re-run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if fmt not in ("jsonl", "parquet"):
        raise UserError(f"--format must be jsonl or parquet, not {fmt!r}")
    written = 0
    with _ledger() as ledger, Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=err, transient=True) as progress:
        task = progress.add_task("exporting", total=None)
        cursor = None
        writer = None
        handle = open(output, "wb")  # noqa: SIM115 - closed in finally with the writer
        try:
            while True:
                response = ledger.raw("/v1/export", since=since, until=until, tenant=tenant,
                                      format=fmt, cursor=cursor, limit=page_rows)
                if "X-Export-Total" in response.headers:
                    progress.update(task, total=int(response.headers["X-Export-Total"]))
                rows = int(response.headers.get("X-Export-Rows", "0"))
                if rows and fmt == "jsonl":
                    handle.write(response.content)
                elif rows:
                    writer = _append_parquet(writer, handle, response.content)
                written += rows
                progress.update(task, completed=written)
                cursor = response.headers.get("X-Next-Cursor")
                if not cursor:
                    break
        finally:
            if writer is not None:
                writer.close()
            handle.close()
    err.print(f"wrote {written} events to {output} ({fmt})", highlight=False)


def _append_parquet(writer: Any, handle: Any, page: bytes) -> Any:
    """Add one page (a Parquet document from ClickHouse) to the output file."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(page))
    if writer is None:
        writer = pq.ParquetWriter(handle, table.schema, compression="zstd")
    writer.write_table(table)
    return writer


@app.command()
def health(
    since: Annotated[str, typer.Option(help="tool health window")] = "1h",
    as_json: JsonFlag = False,
) -> None:
    """Is the ledger healthy: store reachable, data fresh, a stalled sink, a silent or
    lagging stream worker, crash-looping children, the DLQ rate, open breakers, safe modes,
    and tool error rates. Exit 0 ok, 2 degraded, 1 unreachable."""
    from agentledger.client import LedgerError
    from agentledger.supervisor import read_status

    try:
        with _ledger() as ledger:
            report = ledger.get("/v1/health")
            tools = ledger.get("/v1/tools/health", since=since)["tools"]
    except LedgerError as exc:
        stack = read_status(_settings())
        if stack is None:
            raise
        # The stack lives but its store API does not answer: that is degraded, not gone.
        report = {"status": "degraded", "store": f"unreachable: {exc}", "supervisor": stack,
                  "problems": [f"{c['name']}: {c['state']}" for c in stack["children"]
                               if c["state"] != "running"] or [f"store API: {exc}"]}
        if as_json:
            _print_json(report)
        else:
            out.print(f"status: [bold]degraded[/]  store unreachable: {exc}", highlight=False)
            for problem in report["problems"]:
                out.print(f"problem: {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    report["tools"] = tools
    if as_json:
        _print_json(report)
    else:
        out.print(f"status: [bold]{report['status']}[/]  events {report['events']:,} "
                  f"({report['events_last_hour']:,} in the last hour), last ingest "
                  f"{report['last_ingest'] or 'never'}", highlight=False)
        if "rejected_last_hour" in report:
            out.print(f"rejected in the last hour: {report['rejected_last_hour'] or 'none'}"
                      f" ({report['dlq_per_minute']:g}/min over the last 5 min)",
                      highlight=False)
        for problem in report.get("problems", []):
            out.print(f"problem: {problem}", highlight=False, markup=False)
        if report.get("components"):
            _table(report["components"], ["component", "instance", "status", "age_s",
                                          "lag_events"], title="pipeline")
        _table(report["open_breakers"] + report["safe_modes"],
               ["kind", "scope", "rule", "state", "since", "reason"],
               title="degraded", empty="nothing")
        _table(tools, ["tool", "calls", "errors", "timeouts", "error_rate", "p95_ms"],
               title=f"tools, last {since}", empty="no tool calls")
    if report["status"] != "ok":
        raise typer.Exit(2)


revenue_app = typer.Typer(help="Revenue per successful task, the other half of margins.",
                          no_args_is_help=True)
app.add_typer(revenue_app, name="revenue")


@revenue_app.command("set")
def revenue_set(
    tenant: Annotated[str, typer.Argument(help="tenant")],
    workflow: Annotated[str, typer.Argument(help="workflow")],
    usd: Annotated[float, typer.Argument(min=0, help="revenue per successful task, USD")],
    valid_from: Annotated[str, typer.Option("--from", help="ISO date the rate starts")]
    = "2000-01-01",
    note: Annotated[str, typer.Option(help="why, e.g. the contract")] = "",
) -> None:
    """Set what one successful task of WORKFLOW earns for TENANT from a date on."""
    with _ledger() as ledger:
        ledger.post("/v1/revenue", {"tenant": tenant, "workflow": workflow,
                                    "revenue_per_success_usd": usd, "valid_from": valid_from,
                                    "note": note})
    out.print(f"revenue {tenant}/{workflow}: ${usd} per successful task from {valid_from}",
              highlight=False)


@revenue_app.command("show")
def revenue_show(as_json: JsonFlag = False) -> None:
    """Every revenue rate, per tenant, workflow and start date."""
    with _ledger() as ledger:
        rates = ledger.get("/v1/revenue")["rates"]
    if as_json:
        _print_json(rates)
        return
    _table(rates, ["tenant", "workflow", "valid_from", "revenue_per_success_usd", "note"],
           title="revenue", empty="no rates: set one with `agentledger revenue set`")


retention_app = typer.Typer(help="How long each table keeps its rows.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


@retention_app.command("show")
def retention_show(as_json: JsonFlag = False) -> None:
    """TTL per table: configured (AGENTLEDGER_*_RETENTION_DAYS) and applied, with sizes.

    A changed setting is applied by the next process that opens the store."""
    with _ledger() as ledger:
        tables = ledger.get("/v1/retention")["tables"]
    if as_json:
        _print_json(tables)
        return
    _table(tables, ["table", "configured_days", "applied_days", "rows", "bytes_on_disk",
                    "ttl"], title="retention")


keys_app = typer.Typer(help="API keys: who may read which tenants.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(approvals_app, name="approvals")
app.add_typer(policy_app, name="policy")
policy_app.command("backtest")(cli_control.backtest)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    tenant: Annotated[list[str] | None, typer.Option(
        "--tenant", "-t", help="a tenant this key may read (repeat for more)")] = None,
    all_tenants: Annotated[bool, typer.Option(
        help="an operator key: every tenant, SQL, revenue, store metadata")] = False,
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="an approval queue this key may decide (repeat for more)")] = None,
    agent: Annotated[list[str] | None, typer.Option(
        "--agent", help="TENANT/AGENT this key acts for: it cannot approve its requests")]
    = None,
) -> None:
    """Create an API key, print it once, and store only its hash in the keys file
    (AGENTLEDGER_API_KEYS_FILE). Running APIs pick it up when restarted."""
    from agentledger.auth import ALL_TENANTS, append_entry, entry_for, new_key

    if not tenant and not all_tenants:
        raise UserError("name the tenants this key may read (--tenant), or --all-tenants")
    key = new_key()
    path = append_entry(_settings(), entry_for(name, key, [ALL_TENANTS] if all_tenants
                                               else tenant or [], roles=role or (),
                                               agents=agent or ()))
    err.print(f"key {name!r} added to {path}; it is shown only now:", highlight=False)
    sys.stdout.write(key + "\n")


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """The configured keys: names, tenants and hash prefixes (never the keys)."""
    from agentledger.auth import load_entries

    entries = [{"name": e.name, "tenants": e.tenants, "sha256": e.sha256[:12] + "…"}
               for e in load_entries(_settings())]
    if as_json:
        _print_json(entries)
        return
    _table(entries, ["name", "tenants", "sha256"], title="API keys", empty="none configured")


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="port (default AGENTLEDGER_API_PORT)")]
    = None,
    host: Annotated[str | None, typer.Option(help="address (default AGENTLEDGER_API_HOST)")]
    = None,
) -> None:
    """Serve the ledger HTTP API (OpenAPI at /openapi.json, docs at /docs) until SIGTERM.

    With the embedded store this process owns it (stop `agentledger up` first, which
    already serves the API); with a ClickHouse server run as many as you like.
    """
    from agentledger.services import run_api_service

    run_api_service(_settings(api_port=port, api_host=host))


dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("build")
def dashboards_build(
    out: Annotated[str, typer.Option(help="directory for json/ and provisioning/")]
    = "dashboards",
) -> None:
    """Write the four dashboards (operations, tool reliability, unit economics, incident
    search) as Grafana JSON, with the ClickHouse datasource and dashboard provisioning and
    the alert rules (dashboards/alerts.py)."""
    from pathlib import Path

    from dashboards.build import build

    for path in build(Path(out)):
        out_path = str(path)
        sys.stdout.write(out_path + "\n")


@app.command()
def report(
    output: Annotated[str, typer.Option("--output", "-o", help="HTML file to write")]
    = "report.html",
    since: Annotated[str, typer.Option(help="from: 24h, 7d, or an ISO datetime")] = "24h",
    until: Annotated[str, typer.Option(help="to: now, or an ISO datetime")] = "now",
) -> None:
    """The dashboards' panels as one static HTML page of charts, for when no Grafana runs.

    Runs every panel's SQL (macros expanded as Grafana does) through the ledger API; the
    incident section shows the latest run that did not succeed."""
    import datetime as dt

    from agentledger.queries.common import QueryError, parse_time
    from dashboards.check import run_panels
    from dashboards.report import render

    try:
        time_from, time_to = parse_time(since), parse_time(until)
    except QueryError as exc:
        raise UserError(str(exc)) from None
    assert time_from is not None and time_to is not None
    with _ledger() as ledger:
        tenants = [r[0] for r in ledger.query("SELECT DISTINCT tenant FROM events").rows]
        latest = ledger.query(
            "SELECT run_id FROM daily_economics WHERE outcome != 'success' "
            "ORDER BY finished_at DESC LIMIT 1").rows
        run_id = latest[0][0] if latest else ""

        def query(sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
            result = ledger.query(sql, max_rows=10_000)
            return result.columns, result.types, result.rows

        variables = {"tenant": tenants or [""], "agent": "", "tool": "", "trace_id": "",
                     "run_id": run_id, "api_url": ledger.url}
        results = run_panels(query, variables=variables, time_from=time_from,
                             time_to=time_to)
        page = render(results, generated_at=dt.datetime.now(dt.UTC), time_from=time_from,
                      time_to=time_to, source=f"ledger API {ledger.url}")
    with open(output, "w") as handle:
        handle.write(page)
    panels = [r for _, rs in results for r in rs]
    drawn = sum(1 for r in panels if r.rows and not r.error)
    failed = [r.panel.title for r in panels if r.error]
    err.print(f"wrote {output}: {drawn} of {len(panels)} panels have data"
              f"{'; failed: ' + ', '.join(failed) if failed else ''}", highlight=False)
    if failed:
        raise typer.Exit(1)


app.command("watch")(watch_command)  # agentledger/watch.py: the live terminal view


def main() -> None:
    """Entry point: known errors become one readable line and a non-zero exit."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from confluent_kafka import KafkaException
    from pydantic import ValidationError

    from agentledger.auth import KeyConfigError
    from agentledger.broker import BrokerNotFound
    from agentledger.client import LedgerError
    from agentledger.query import QueryRefused
    from core.store import StoreBusy
    from producers.emitter import BufferFull, DeliveryFailed
    from sinks.dlq import DeadLetterFailed
    from streams.policy import PolicyError

    known = (UserError, PolicyError, BrokerNotFound, StoreBusy, QueryRefused, LedgerError,
             KeyConfigError, BufferFull,
             DeliveryFailed, DeadLetterFailed, ClickHouseError, KafkaException, ValidationError,
             TimeoutError, RuntimeError, OSError)
    try:
        app()
    except known as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ValidationError):
            message = "invalid settings: " + "; ".join(
                f"AGENTLEDGER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors())
        err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
        if os.environ.get("AGENTLEDGER_DEBUG"):
            raise
        sys.exit(1)
