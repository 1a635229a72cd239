"""The ``agentledger`` command line. Every command explains itself with ``--help``."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentledger import discovery, logs
from agentledger.settings import Settings, load_settings

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
    from agentledger.kafka import client_config, default_topics, ensure_topics
    from agentledger.services import stop_on_signals

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

    from agentledger.kafka import client_config, default_topics, ensure_topics
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


@app.command()
def control(
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array of scopes")] = False,
    heartbeats: Annotated[bool, typer.Option(help="also list stream worker heartbeats")]
    = False,
) -> None:
    """Current state of every scope on agent.control: breakers, safe modes, budgets,
    overrides (and, with --heartbeats, the stream workers)."""
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


def _publish_override(scope: str, state: str, reason: str) -> dict[str, Any]:
    import time
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from agentledger.kafka import client_config
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


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one read-only statement (SELECT, WITH, SHOW…)")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="bind name=value for {name:Type} placeholders")] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="refuse results larger than this")]
    = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="rows as a JSON array of objects")]
    = False,
) -> None:
    """Run a read-only SQL query against the ledger store.

    Works while `agentledger up` owns the embedded store (the query goes to its API).
    Statements that write are refused, by a check here and by ClickHouse's readonly mode.
    """
    from agentledger.reader import open_reader

    settings = _settings()
    reader = open_reader(settings)
    try:
        result = reader.query(query, _parse_params(param or []), max_rows=max_rows)
    finally:
        reader.close()
    _show(result, as_json)


@app.command()
def summary(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object of tables")] = False,
) -> None:
    """Ingestion summary: events by type, runs by outcome, cost by workflow, rejects."""
    from agentledger.query import SUMMARY_QUERIES
    from agentledger.reader import open_reader

    settings = _settings()
    reader = open_reader(settings)
    try:
        results = {title: reader.query(q) for title, q in SUMMARY_QUERIES.items()}
    finally:
        reader.close()
    if as_json:
        _print_json({title: [dict(zip(r.columns, row, strict=True)) for row in r.rows]
                     for title, r in results.items()})
        return
    for title, result in results.items():
        _show(result, False, title=title)


def main() -> None:
    """Entry point: known errors become one readable line and a non-zero exit."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from confluent_kafka import KafkaException
    from pydantic import ValidationError

    from agentledger.broker import BrokerNotFound
    from agentledger.clickhouse import StoreBusy
    from agentledger.query import QueryRefused
    from agentledger.reader import ReadError
    from producers.emitter import BufferFull, DeliveryFailed
    from sinks.dlq import DeadLetterFailed
    from streams.policy import PolicyError

    known = (UserError, PolicyError, BrokerNotFound, StoreBusy, QueryRefused, ReadError, BufferFull,
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
