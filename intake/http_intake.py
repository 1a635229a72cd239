"""The OTLP/HTTP intake's work, apart from HTTP: decode a request's spans, assemble runs,
publish each run once complete, dead-letter what is refused.

The routes that serve it (``POST /v1/traces``) are the shell's
(:mod:`agentledger.api.traces`), in the ledger API and in the ``agentledger intake``
process. Spans are grouped into runs in the serving process (:class:`Assembler`) and a
closer thread publishes each run once complete. In an accepted request, refused spans go to
the DLQ, acknowledged before the answer (the sink lands them in ``rejected_events``), and
the rest land. Behind a load balancer, keep one trace on one process (or use the Kafka
intake).

No span stops the intake: values the canonical form cannot hold are made holdable or
refused when decoded (:func:`agentledger.intake.spans.holdable`), so the answer's
``partial_success`` counts them; a run that still fails to build when closed has its spans
dead-lettered (``run_unbuildable``) and the closer goes on to the next run; a closing
round that raises is logged and counted, and the loop goes on. The closer's beat is in
``health`` (:class:`agentledger.intake.publisher.CloserBeat`). Tool arguments and run errors
are redacted with ``Settings.redact_keys`` (``AGENTLEDGER_REDACT_KEYS``), as the SDK does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaException

from agentledger.core.redaction import Redactor
from agentledger.core.settings import Settings
from agentledger.intake.catalogue import CatalogueError, load_catalogue
from agentledger.intake.publisher import CloserBeat, Publisher, PublishFailed
from agentledger.intake.runs import Assembler, Intake
from agentledger.intake.spans import PayloadError, decode_json, decode_protobuf

log = logging.getLogger(__name__)

MAX_OPEN_SPANS = 200_000
"""Spans waiting for their runs to close before new batches are refused (retryable)."""
PROTOBUF, JSON = "application/x-protobuf", "application/json"
HTTP_TOPIC = "otlp.http"
"""``rejected_events.topic`` (and the DLQ's original-topic header) of a span refused here."""


class IntakeFull(Exception):
    """Too many spans and events wait to be published: the request is refused, retryable."""


class HttpIntake:
    """The assembler, the publisher and the closer thread of one serving process."""

    beat: CloserBeat | None = None
    """The closer's liveness file (None when built without its thread)."""

    def __init__(self, settings: Settings, bootstrap: str, *, grace_s: float | None = None,
                 idle_s: float = 30.0, role: str = "api"):
        try:
            catalogue = load_catalogue(settings.policy_file)
        except CatalogueError as exc:  # every tool then counts as a write: the safe side
            log.error("tool catalogue not loaded", extra={"error": str(exc)})
            catalogue = None
        grace_s = settings.otlp_grace_s if grace_s is None else grace_s
        self.assembler = Assembler(origin="otlp_http", grace_s=grace_s, idle_s=idle_s,
                                   catalogue=catalogue,
                                   redactor=Redactor(settings.redact_keys))
        self.publisher = Publisher(bootstrap, security=settings.kafka_security)
        self.beat = CloserBeat(settings, role, self.assembler)
        self._pending: list[dict[str, Any]] = []
        """Events of closed runs Kafka has not acknowledged yet (retried; ids dedup)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="otlp-closer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Close due runs every 50 ms until stopped; nothing raised in a round ends it."""
        beat = self.beat
        assert beat is not None
        beat.beat(force=True)
        while not self._stop.wait(0.05):
            try:
                self.close_due()
            except Exception as exc:  # counted and reported in health; the next round runs
                beat.errors += 1
                beat.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
                log.exception("OTLP closing round failed", extra={"error": str(exc)})
            beat.beat()

    def close_due(self, force: bool = False) -> int:
        events = list(self._pending)
        runs = self.assembler.iter_due(force=force)
        refused = 0
        try:
            if events:
                self.publisher.publish(events)
            for run in runs:  # each run goes out as soon as it is built
                events += run.events
                self.publisher.publish(run.events)
                if run.rejected:  # its build failed: its spans go to the DLQ, with why
                    refused += len(run.rejected)
                    self.publisher.reject(run.rejected, topic=HTTP_TOPIC)
            if self.beat is not None:
                self.beat.spans_refused += refused
                self.beat.closed(len(events))
            if not events and not refused:
                return 0
            self.publisher.flush(30)
        except (PublishFailed, KafkaException) as exc:
            for run in runs:  # the closed runs not built yet must not be lost
                events += run.events
                if run.rejected:
                    self.publisher.reject(run.rejected, topic=HTTP_TOPIC)
            self._pending = events  # sent again next round; the sink dedups by event_id
            log.error("OTLP events not published yet", extra={"events": len(events),
                                                               "error": str(exc)})
            return 0
        self._pending = []
        return len(events)

    @property
    def backlog(self) -> int:
        """Spans of open runs plus events waiting for Kafka: what back-pressure bounds."""
        return self.assembler.open_spans + len(self._pending)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.close_due(force=True)
        if self.beat is not None:
            self.beat.withdraw()


def decode_request(body: bytes, media: str) -> list[Any]:
    """The spans of an OTLP request body, or :class:`PayloadError` saying why not."""
    try:
        return decode_protobuf(body) if media == PROTOBUF else decode_json(body)
    except PayloadError:
        raise
    except Exception as exc:  # an unforeseen decoder failure is this request's, answered 400
        log.exception("OTLP request not decodable", extra={"error": str(exc)})
        raise PayloadError(f"OTLP request not decodable: {type(exc).__name__}: "
                           f"{str(exc)[:300]}") from None


def ingest(intake: HttpIntake, body: bytes, media: str, tenant: str, *,
           max_open_spans: int = MAX_OPEN_SPANS, agents: frozenset[str] | None = None
           ) -> Intake:
    """Take one request's spans for ``tenant`` (as ``agents`` only, when the key is bound
    to agents); its refusals are in the DLQ on return."""
    spans = decode_request(body, media)
    if intake.backlog >= max_open_spans:
        raise IntakeFull(f"the intake holds {intake.backlog} spans and events not yet "
                         "published; retry later")
    result = intake.assembler.add(spans, tenant, agents=agents)
    if result.rejected:
        # the DLQ acknowledged before the answer; the sink lands it in rejected_events
        intake.publisher.reject(result.rejected, topic=HTTP_TOPIC)
        intake.publisher.dead_letters.flush(30)
    return result
