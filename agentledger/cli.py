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
    """Run the embedded stack in the foreground: broker, sink and store API.

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
    as_json: Annotated[bool, typer.Option("--json", help="print {\"events\": n, \"runs\": n}")]
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

    known = (UserError, BrokerNotFound, StoreBusy, QueryRefused, ReadError, BufferFull,
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
        err.print(f"error: {message}", highlight=False, markup=False)
        if os.environ.get("AGENTLEDGER_DEBUG"):
            raise
        sys.exit(1)
