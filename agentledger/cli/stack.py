"""The processes of a ledger: ``up`` (the embedded stack), ``broker``, ``sink``,
``streams`` and ``api``, each in the foreground until SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.render import err, out
from agentledger.core import discovery


def up(
    broker_port: Annotated[int, typer.Option(help="embedded broker port (0 = a free one)")] = 0,
) -> None:
    """Run the embedded stack in the foreground: broker, sink, store API, stream worker.

    Prints the Kafka bootstrap address, the ClickHouse DSN, the API URL and the web
    console's URL (``<api>/console``). Ctrl-C or
    SIGTERM stops everything in order (sink flushes and commits first).
    """
    from agentledger.services import stop_on_signals
    from agentledger.supervisor import Supervisor

    settings = connect.settings(broker_port=broker_port or None)
    supervisor = Supervisor(settings, say=lambda line: out.print(line, highlight=False))
    with stop_on_signals(supervisor.stop):
        code = supervisor.run()
    raise typer.Exit(code)


def broker(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = a free one)")] = 9092,
) -> None:
    """Run only the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    import threading

    from agentledger.broker import EmbeddedBroker
    from agentledger.core.kafka import client_config, default_topics, ensure_topics
    from agentledger.services import stop_on_signals

    settings = connect.settings()
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

    settings = connect.settings()
    stats = run_sink_service(settings, connect.bootstrap(settings),
                             serve_api=settings.embedded_store if api is None else api,
                             max_idle_s=max_idle)
    err.print(f"sink stopped: {stats.as_dict()}", highlight=False)


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
    from agentledger.streams.app import run_worker
    from agentledger.streams.control_policy import load_policy

    settings = connect.settings()
    loaded = load_policy(policy or settings.policy_file)
    run_worker(settings, connect.bootstrap(settings), loaded)


def api(
    port: Annotated[int | None, typer.Option(help="port (default AGENTLEDGER_API_PORT)")]
    = None,
    host: Annotated[str | None, typer.Option(help="address (default AGENTLEDGER_API_HOST)")]
    = None,
) -> None:
    """Serve the ledger HTTP API (OpenAPI at /openapi.json, docs at /docs, the web console
    at /console) until SIGTERM.

    With the embedded store this process owns it (stop `agentledger up` first, which
    already serves the API); with a ClickHouse server run as many as you like.
    """
    from agentledger.services import run_api_service

    run_api_service(connect.settings(api_port=port, api_host=host))
