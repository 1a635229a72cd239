"""``agentledger intake``: OTLP spans from Kafka into ledger events."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from agentledger.cli import connect
from agentledger.cli.render import UserError

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$")


def intake(
    tenant: Annotated[str, typer.Option(help="tenant the spans are written for (the "
                                             "Collector has no API key)")] = "default",
    topic: Annotated[str, typer.Option(help="topic the Collector exports to")] = "otlp_spans",
    encoding: Annotated[str, typer.Option(
        help="otlp_proto, otlp_json or auto (by the first byte)")] = "auto",
    group: Annotated[str, typer.Option(help="consumer group")] = "agentledger-intake",
    grace_s: Annotated[float, typer.Option(
        help="seconds after a trace's root span before its run is closed")] = 2.0,
    idle_s: Annotated[float, typer.Option(
        help="seconds without a span before a rootless trace is closed")] = 30.0,
    http: Annotated[bool, typer.Option(
        help="also serve OTLP/HTTP POST /v1/traces (AGENTLEDGER_OTLP_HTTP_HOST/_PORT, "
             "default 127.0.0.1:4318; API keys as for the ledger API)")] = True,
) -> None:
    """Run the OpenTelemetry intake: OTLP/HTTP exports (port 4318) and the Collector's
    Kafka exporter (otlp_spans) → agent.events."""
    from agentledger.core.kafka import TopicSpec, client_config, default_topics, ensure_topics
    from agentledger.core.redaction import Redactor
    from agentledger.intake.catalogue import CatalogueError, load_catalogue
    from agentledger.intake.kafka_loop import KafkaIntake
    from agentledger.intake.publisher import Publisher
    from agentledger.intake.runs import Assembler
    from agentledger.services import serve_otlp_http, stop_on_signals

    if encoding not in ("otlp_proto", "otlp_json", "auto"):
        raise UserError(f"--encoding {encoding!r}: use otlp_proto, otlp_json or auto")
    if not _TENANT.match(tenant):
        raise UserError(f"--tenant {tenant!r} is not a tenant name")
    settings = connect.settings()
    bootstrap = connect.bootstrap(settings)
    try:
        catalogue = load_catalogue(settings.policy_file)
    except CatalogueError as exc:
        raise UserError(str(exc)) from None
    admin = client_config(bootstrap, "admin", extra=settings.kafka_security)
    ensure_topics(admin, [*default_topics(settings.events_partitions),
                          TopicSpec(topic, settings.events_partitions)])
    runner = KafkaIntake(
        client_config(bootstrap, "consumer", group_id=group,
                      session_timeout_ms=settings.kafka_session_timeout_ms,
                      extra=settings.kafka_security),
        Publisher(bootstrap, security=settings.kafka_security),
        # the SDK's redaction settings (AGENTLEDGER_REDACT_KEYS) apply to spans too
        Assembler(origin="otlp_kafka", catalogue=catalogue, grace_s=grace_s, idle_s=idle_s,
                  redactor=Redactor(settings.redact_keys)),
        tenant=tenant, topic=topic, encoding=encoding, settings=settings)
    typer.echo(f"intake: {topic} → agent.events (tenant {tenant})", err=True)
    server = serve_otlp_http(settings) if http else None
    try:
        with stop_on_signals(runner.stop):
            stats = runner.run()
    finally:
        if server is not None:
            server.stop()
    typer.echo(f"intake stopped: {stats.as_dict()}", err=True)
