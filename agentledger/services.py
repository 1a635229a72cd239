"""Wiring: settings → the sink, the store API, the embedded broker. No logic of their own."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import uvicorn
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer
from fastapi import FastAPI

from agentledger.api.app import create_app
from agentledger.auth import (
    KeyEntry,
    KeyRing,
    KeySource,
    ReloadingKeyRing,
    load_entries,
    mint_operator_key,
)
from agentledger.core import discovery, signing
from agentledger.core.dead_letters import DeadLetters
from agentledger.core.heap import freeze_long_lived
from agentledger.core.kafka import client_config, default_topics, ensure_topics
from agentledger.core.settings import Settings
from agentledger.core.store import StoreBusy, claim_store, client_for
from agentledger.monitor import PipelineReporter
from agentledger.queries.pipeline import HealthLimits
from agentledger.schemas import topics
from agentledger.sinks.checkpoint_topic import TopicPublisher
from agentledger.sinks.clickhouse import BatchPolicy, ClickHouseWriter
from agentledger.sinks.consumer import Sink, SinkStats
from agentledger.sinks.ledger import LedgerLogs, LedgerWriter
from agentledger.sinks.migrate import migrate

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> Client:
    """A client on the store with the schema migrated (idempotent)."""
    bootstrap_client = client_for(settings, database=False)
    migrate(bootstrap_client, db=settings.clickhouse_database, ttl_days=settings.ttl_days())
    bootstrap_client.close()
    return client_for(settings)


def build_sink(settings: Settings, bootstrap: str, client: Client) -> Sink:
    extra = settings.kafka_security
    store_writer = ClickHouseWriter(client, settings.clickhouse_database)
    writer: ClickHouseWriter | LedgerWriter = store_writer
    if settings.checkpoints_enabled:  # the Merkle logs and signed heads (sinks/ledger.py)
        publisher = TopicPublisher(Producer(client_config(bootstrap, "producer", extra=extra)),
                                   topics.CHECKPOINTS)
        writer = LedgerWriter(store_writer, LedgerLogs(
            client, settings.clickhouse_database, signing.ledger_key(settings),
            interval_s=settings.checkpoint_interval_seconds,
            interval_events=settings.checkpoint_interval_events,
            recent_ids=settings.checkpoint_recent_ids, publish=publisher))
    return Sink(
        Consumer(client_config(bootstrap, "consumer", group_id=settings.sink_group,
                               session_timeout_ms=settings.kafka_session_timeout_ms,
                               extra=extra)),
        writer,
        DeadLetters(client_config(bootstrap, "producer", extra=extra),
                    max_payload_bytes=settings.dlq_max_payload_bytes),
        policy=BatchPolicy(settings.sink_batch_rows, settings.sink_batch_bytes,
                           settings.sink_batch_seconds),
        max_event_bytes=settings.max_event_bytes,
        status_interval_s=settings.sink_status_seconds,
        stall_after_s=settings.sink_stall_seconds,
    )


def claim_store_patiently(settings: Settings) -> IO[str] | None:
    """:func:`claim_store`, retried for ``store_claim_seconds``: a CLI command that opened
    the store a moment before the stack started holds it only for its own length."""
    deadline = time.monotonic() + settings.store_claim_seconds
    pause = 0.2
    while True:
        try:
            return claim_store(settings)
        except StoreBusy:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("store busy; retrying", extra={"retry_in_s": pause})
            time.sleep(pause)  # backoff between lock attempts
            pause = min(pause * 2, 5.0)


@dataclass
class ApiServer:
    """A running API; it owns the client it serves and closes it when stopped."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str
    client: Client

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        # chdb serves one data directory per process: a client left open would keep it.
        self.client.close()


def key_ring(settings: Settings, *extra: KeyEntry) -> KeyRing:
    """The configured keys plus ``extra`` (such as this machine's operator key)."""
    return KeyRing([*load_entries(settings), *extra])


def serve_app(app: FastAPI, host: str, port: int, *, name: str
              ) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve ``app`` on a thread; binds first, so the URL is known and the port is ours."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name,
                              daemon=True)
    thread.start()
    # The socket only listens once uvicorn has started: callers may connect right away.
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.005)
    return server, thread, f"http://{host}:{port}"


def start_api(settings: Settings, client: Client, sink: Sink | None = None, *,
              keys: KeySource | None = None, host: str | None = None,
              port: int | None = None) -> ApiServer:
    """Serve the API on a thread; binds first, so the URL is known and the port is ours.

    Unless ``keys`` is given, it accepts the configured keys and a freshly minted
    operator key for this machine's CLI, read again when their files change, exactly as
    the OTLP intake reads them (:class:`agentledger.auth.ReloadingKeyRing`): a key
    removed from the keys file is refused here too, within a second.
    """
    if keys is None:
        load_entries(settings)  # a malformed keys file stops the start, as it always did
        mint_operator_key(settings)
        keys = ReloadingKeyRing(settings)
    app = create_app(client, keys, database=settings.clickhouse_database,
                     retention_days=settings.ttl_days(),
                     stats=(lambda: sink.stats.as_dict()) if sink else None,
                     max_rows=settings.api_max_rows, query_seconds=settings.api_query_seconds,
                     health_limits=HealthLimits(settings.health_silent_seconds,
                                                settings.health_streams_max_lag,
                                                settings.health_dlq_max_per_minute,
                                                settings.health_streams_max_lag_seconds))
    app.state.otlp_settings = settings  # the OTLP routes publish with these, not the env
    server, thread, url = serve_app(app, host or settings.api_host,
                                    settings.api_port if port is None else port, name="api")
    freeze_long_lived()  # the app, its imports and its state: short full collections
    return ApiServer(server, thread, url, client)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop`` (graceful), then restore the previous handlers."""
    previous = {sig: signal.signal(sig, lambda *_: stop()) for sig in
                (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_api_service(settings: Settings) -> None:
    """The API alone, until SIGTERM/SIGINT. Owns the store when it is embedded."""
    lock = claim_store_patiently(settings)
    open_store(settings).close()
    api = start_api(settings, client_for(settings))
    if lock:
        discovery.publish(settings, discovery.STORE_FILE,
                          {"api_url": api.url, "dsn": settings.dsn_for_display})
    log.info("ledger API listening", extra={"url": api.url})
    stopped = threading.Event()
    try:
        with stop_on_signals(stopped.set):
            while not stopped.wait(0.5) and api.thread.is_alive():
                pass
    finally:
        discovery.withdraw(settings, discovery.STORE_FILE)
        api.stop()
        if lock:
            lock.close()


def run_sink_service(settings: Settings, bootstrap: str, *, serve_api: bool,
                     max_idle_s: float | None = None) -> SinkStats:
    """The sink (and, when it owns an embedded store, the API) until SIGTERM/SIGINT."""
    lock = claim_store_patiently(settings)
    ensure_topics(client_config(bootstrap, "admin", extra=settings.kafka_security),
                  default_topics(settings.events_partitions))
    client = open_store(settings)
    sink = build_sink(settings, bootstrap, client)
    reporter = PipelineReporter(settings, bootstrap, sink)
    sink.status_rows = reporter
    api = None
    if serve_api:
        api = start_api(settings, client_for(settings), sink)
        discovery.publish(settings, discovery.STORE_FILE,
                          {"api_url": api.url, "dsn": settings.dsn_for_display})
        log.info("store API listening", extra={"url": api.url})
    try:
        with stop_on_signals(sink.stop):
            return sink.run(max_idle_s=max_idle_s)
    finally:
        reporter.close()
        if api:
            discovery.withdraw(settings, discovery.STORE_FILE)
            api.stop()
        if lock:
            lock.close()


@dataclass
class OtlpHttpServer:
    """The intake's OTLP/HTTP endpoint, served on a thread beside the Kafka loop."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str
    settings: Settings

    def stop(self) -> None:
        """Shut the server down; its shutdown publishes every run still open."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        discovery.withdraw(self.settings, discovery.INTAKE_FILE)


def serve_otlp_http(settings: Settings) -> OtlpHttpServer:
    """Serve ``POST /v1/traces`` on ``otlp_http_host:otlp_http_port`` and publish the URL.

    A taken port (a local Collector holds 4318) is not fatal: the intake serves on a free
    port instead, says so, and publishes that URL in the run dir (``intake.json``).
    """
    from agentledger.api.traces import create_intake_app

    app = create_intake_app(settings)
    host, port = settings.otlp_http_host, settings.otlp_http_port
    try:
        server, thread, url = serve_app(app, host, port, name="otlp-http")
    except OSError as exc:
        log.warning("OTLP/HTTP port taken; serving on a free port",
                    extra={"port": port, "error": str(exc)})
        server, thread, url = serve_app(app, host, 0, name="otlp-http")
    discovery.publish(settings, discovery.INTAKE_FILE, {"otlp_http_url": url})
    log.info("OTLP/HTTP intake listening", extra={"url": f"{url}/v1/traces"})
    return OtlpHttpServer(server, thread, url, settings)
