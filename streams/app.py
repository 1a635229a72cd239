"""The faust app: two stages, three tables, three timers.

    agent.events ──fold (per run, whole fetches)──▶ <id>-tenant-facts ──decide (per tenant,
        a faust agent)──▶ agent.control (breaker / safe-mode / budget signals, heartbeats)
                          agent.metrics (tool health, unit economics)

The fold takes agent.events a fetch at a time through :mod:`agentledger.streams.transport` (faust's
record-at-a-time delivery cost more per event than the fold); its semantics are the same
as a faust agent's and are written there.

Delivery: at-least-once. faust flushes the producer (signals, facts, changelogs) before
it commits the source offsets, so a ``kill -9`` re-processes at most the uncommitted tail.
Re-processing cannot re-announce a transition: breaker and safe-mode state (with its
version) is restored from the changelog-backed tables first, and the same results against
the same state make no new transition. Budget state per run is a table too.

State is written only when it changes (a transition, a run's budget counters per batch),
never per event: that is what lets one worker keep up (docs/control-loop.md).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP, Message, StreamT, TableT, TopicT
from mode.types.signals import BaseSignalT

from agentledger.core import signing
from agentledger.core.kafka import faust_config
from agentledger.core.settings import Settings
from agentledger.schemas import topics
from agentledger.schemas.canonical import NotCanonicalizable
from agentledger.schemas.signals import ALIVE, ControlSignal
from agentledger.streams.control_policy import Policy
from agentledger.streams.decide import BREAKERS, SAFE_MODES, Controller, Decisions
from agentledger.streams.facts import from_wire, to_wire
from agentledger.streams.fold import RunFolder
from agentledger.streams.transport import BatchDeliveryTransport

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.1
BURST_GAP_SECONDS = 0.5
"""Input with no pause this long is one burst: progress beats report its newest event time.
After a pause, a new burst starts from its own times (a replay "in the past" is followed)."""


def persist(table: TableT[str, Any], key: str, value: dict[str, Any] | None,
            partition: int) -> None:
    """Write one table key with its changelog record on ``partition``.

    faust's ``table[key] = value`` needs "the current event" to pick the changelog
    partition, and there is none inside a fetch handed to the fold or in timers. We know the
    partition (the source partition of the run or tenant), so we say it: the changelog
    stays co-partitioned with the source and recovery after a rebalance is correct.
    """
    if value is None:
        table.data.pop(key, None)
        table.send_changelog(partition, key, None, value_serializer="raw")
    else:
        table.data[key] = value
        table.send_changelog(partition, key, value)


class ControlLoop:
    """Builds and owns the faust app for one worker process."""

    def __init__(self, settings: Settings, bootstrap: str, policy: Policy,
                 worker_id: str | None = None):
        self.settings = settings
        self.policy = policy
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.folder = RunFolder(policy)
        self.controller = Controller(policy)
        self.stats: dict[str, float] = {"events": 0, "skipped": 0, "facts": 0, "signals": 0,
                                        "metrics": 0, "lag_s": 0.0, "offset_gaps": 0}
        self._next_offset: dict[int, int] = {}
        self._restored = {"runs": False, "decide": False}
        self._facts_owned: set[int] = set()
        self._facts_to_restore: set[int] = set()
        """Facts partitions assigned to this worker since the decide stage last restored:
        their breakers and safe modes (from the tables, recovered by faust) are loaded
        before the next decision, so state moves with its partition on a rebalance."""
        self._tenant_partition: dict[str, int] = {}
        self._heartbeats = 0
        self._beat_event_time = 0.0
        self._burst_beat_at = 0.0
        self._last_input = time.monotonic()

        app = self.app = faust.App(**faust_config(
            bootstrap, app_id=settings.streams_group, partitions=settings.events_partitions,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            security=settings.kafka_security), broker_max_poll_records=settings.streams_batch_max)
        transport = app.transport = BatchDeliveryTransport(app.conf.broker_consumer, app)

        def raw_topic(name: str) -> TopicT:
            return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw")

        self.events = raw_topic(topics.EVENTS)
        self.control = raw_topic(topics.CONTROL)
        self.metrics = raw_topic(topics.METRICS)
        self.facts = app.topic(f"{settings.streams_group}-tenant-facts", key_type=str,
                               key_serializer="json", value_serializer="json",
                               partitions=settings.events_partitions, internal=True)

        def table(name: str, help_: str) -> TableT[str, Any]:
            return app.Table(name, default=None, partitions=settings.events_partitions,
                             help=help_, schema=faust.Schema(
                                 key_type=str, key_serializer="json", value_serializer="json"))

        self.runs = table("runs", "budget counters per open run")
        self.breakers = table(BREAKERS, "breaker state per tenant/tool")
        self.safe_modes = table(SAFE_MODES, "safe mode per agent and rule")

        app.on_partitions_assigned.connect(self._on_assigned)
        # stage one takes whole fetches (streams.transport), not faust's record-at-a-time
        # streams: per event, faust's delivery cost more than the fold itself
        app.topics.add(self.events)
        transport.deliver_in_batches(topics.EVENTS, self._fold_batch)
        app.agent(self.facts, name="decide")(self._decide_agent)
        app.timer(settings.streams_heartbeat_seconds, on_leader=False)(self._heartbeat_timer)
        app.timer(settings.streams_metrics_seconds, on_leader=False)(self._metrics_timer)
        app.timer(PROGRESS_SECONDS, on_leader=False)(self._progress_timer)

    # -- stage one: fold by run ----------------------------------------------------------

    async def _fold_batch(self, batch: list[Message]) -> None:
        if not self._restored["runs"]:
            self.folder.restore(self.runs.items())
            self._restored["runs"] = True
        by_partition: dict[int, list[bytes]] = defaultdict(list)
        appended = 0.0
        for message in batch:
            by_partition[message.partition].append(message.value or b"")
            appended = max(appended, message.timestamp)
            self._check_contiguous(message.partition, message.offset)
        # seconds behind: how old (in broker time) the newest event just read is, so
        # heartbeats and `agentledger health` show the lag in time, not only in events
        self.stats["lag_s"] = round(max(0.0, time.time() - appended), 3)
        for partition, payloads in by_partition.items():
            out = self.folder.fold(payloads)
            self.stats["events"] += len(payloads)
            self.stats["skipped"] += out.skipped
            for run_id, snap in out.runs_changed.items():
                persist(self.runs, run_id, snap, partition)
            for signal in out.signals:
                await self._publish(signal)
            for tenant, facts in out.facts.items():
                self.stats["facts"] += len(facts)
                await self.facts.send(key=tenant, value={
                    "wm": out.watermark, "facts": [to_wire(f) for f in facts]})
        self._last_input = time.monotonic()

    async def _on_assigned(self, _app: Any, /, *args: Any, signal: BaseSignalT[Any],
                           **_: Any) -> None:
        # after a rebalance a partition resumes wherever its last owner committed, with
        # the state that owner persisted: reload it before the partition's next record
        # (faust delivers none until its table recovery is done)
        assigned: set[TP] = args[0]
        self._next_offset.clear()
        facts = {tp.partition for tp in assigned if tp.topic == self.facts.get_topic_name()}
        gone = {t for t, p in self._tenant_partition.items() if p not in facts}
        if gone:
            self.controller.forget(gone)
            for tenant in gone:
                del self._tenant_partition[tenant]
        self._facts_to_restore |= facts - self._facts_owned
        self._facts_owned = facts
        self._restored["runs"] = False

    def _check_contiguous(self, partition: int, offset: int) -> None:
        """agent.events is neither compacted nor transactional, so offsets a consumer hands
        us are contiguous per partition; a jump means records we never saw (their facts
        are missing from every decision and window). Counted and logged, never silent."""
        expected = self._next_offset.get(partition)
        if expected is not None and offset > expected:
            self.stats["offset_gaps"] += offset - expected
            log.warning("records skipped by the consumer", extra={
                "partition": partition, "expected": expected, "got": offset})
        self._next_offset[partition] = offset + 1

    # -- stage two: decide per tenant ----------------------------------------------------

    def _restore_decisions(self) -> None:
        parts, self._facts_to_restore = self._facts_to_restore, set()
        if parts:
            for name, table in ((BREAKERS, self.breakers), (SAFE_MODES, self.safe_modes)):
                items = [(k, s) for k, s in table.items() if s.get("partition") in parts]
                for _, snap in items:
                    self._tenant_partition[snap["tenant"]] = snap["partition"]
                n = self.controller.restore(name, items)
                log.info("restored state", extra={"table": name, "keys": n,
                                                  "partitions": sorted(parts)})
        self._restored["decide"] = True

    async def _decide_agent(self, stream: StreamT[Any]) -> None:
        async for event in stream.events():
            self._restore_decisions()
            tenant = event.key
            self._tenant_partition[tenant] = event.message.partition
            value = event.value
            facts = [from_wire(row) for row in value["facts"]]
            decisions = self.controller.apply(tenant, facts, arrival=time.time())
            decisions.extend(self.controller.advance())
            await self._emit(decisions)

    async def _emit(self, decisions: Decisions) -> None:
        for table_name, tenant, key, snap in decisions.state:
            table = self.breakers if table_name == BREAKERS else self.safe_modes
            partition = self._tenant_partition.get(tenant, 0)
            persist(table, key, snap | {"partition": partition}, partition)
        for signal in decisions.signals:
            await self._publish(signal)
        for metric in decisions.metrics:
            self.stats["metrics"] += 1
            await self.metrics.send(key=metric.key.encode(), value=metric.to_json())

    async def _publish(self, signal: ControlSignal) -> None:
        """Send one signal, signed with the ledger's key: agents obey only signed control
        records (core/signing.py). A signal the canonical form cannot hold goes out
        unsigned — verifying agents ignore it (a missed heartbeat fails them closed) —
        and is counted as ``sign_errors`` in the worker's heartbeats and logged."""
        self.stats["signals"] += signal.kind != "heartbeat"
        if signal.kind != "heartbeat":
            # the key and state in the text too: faust's plain log format drops ``extra``
            log.warning("control signal %s → %s", signal.key, signal.state,
                        extra={"key": signal.key, "state": signal.state,
                               "reason": signal.reason})
        value = signal.to_json()
        try:
            value = signing.sign_json(self._signing_key(), signing.CONTROL, value)
        except NotCanonicalizable as exc:
            self.stats["sign_errors"] = self.stats.get("sign_errors", 0) + 1
            log.error("control signal %s not signed: %s", signal.key, exc,
                      extra={"key": signal.key})
        await self.control.send(key=signal.key.encode(), value=value)

    def _signing_key(self) -> signing.LedgerKey:
        """The ledger's key (<data_dir>/keys or AGENTLEDGER_LEDGER_KEY_DIR), loaded or
        created on the first signal."""
        key: signing.LedgerKey | None = getattr(self, "_ledger_key", None)
        if key is None:
            key = self._ledger_key = signing.ledger_key(self.settings)
        return key

    # -- timers --------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        # event_time: the newest event time decided in the latest burst of input, not a
        # maximum over all time, so a scenario replayed "in the past" is followed too
        self._heartbeats += 1
        now = self._beat_event_time
        if time.monotonic() - self._last_input > max(1.0, self.settings.streams_heartbeat_seconds):
            # nothing fetched for a while: the fetcher is waiting at the end of the topic,
            # so nothing it knows of is waiting; the last fetch's age is history, not lag
            self.stats["lag_s"] = 0.0
        await self._publish(ControlSignal(
            kind="heartbeat", scope=f"worker/{self.worker_id}", state=ALIVE,
            version=self._heartbeats,
            ts=datetime.fromtimestamp(now, UTC) if now else datetime.now(UTC),
            policy_version=self.policy.version,
            details={"event_time": now, **self.stats, **self.controller.counts()}))

    async def _heartbeat_timer(self) -> None:
        idle = self.settings.streams_idle_advance_seconds
        if idle and self._restored["decide"] and time.monotonic() - self._last_input > idle:
            # nothing arrives: silent agents' clocks run on with the wall clock, so open
            # breakers half-open and held safe modes can end
            await self._emit(self.controller.idle(time.time(), idle))
        await self._heartbeat()

    async def _progress_timer(self) -> None:
        # progress beats: guards (and lockstep simulations) learn how far in event time
        # the decisions are within ~100 ms, without a beat per record at high volume
        recent = self.controller.take_recent_time()
        if recent:
            now = time.monotonic()
            if now - self._burst_beat_at < BURST_GAP_SECONDS:
                # same burst of input: its partitions arrive in separate fetches, so the
                # newest time of the latest window alone could step back below what this
                # burst already decided (and a lockstep reader would wait for it forever)
                recent = max(recent, self._beat_event_time)
            self._burst_beat_at = now
            self._beat_event_time = recent
            await self._heartbeat()

    async def _metrics_timer(self) -> None:
        await self._emit(Decisions(metrics=self.controller.publish_open_windows()))


def run_worker(settings: Settings, bootstrap: str, policy: Policy) -> None:
    """Run one stream worker until SIGINT/SIGTERM (faust's worker handles the signals)."""
    from faust.worker import Worker

    loop = ControlLoop(settings, bootstrap, policy)
    if settings.log_level.upper() != "DEBUG":
        # aiokafka formats a debug record per produced message unless debug is off
        # process-wide (faust's worker sets up logging after us, so levels do not stick)
        logging.disable(logging.DEBUG)
    Worker(loop.app, loglevel=settings.log_level, quiet=True,
           redirect_stdouts=False).execute_from_commandline()
