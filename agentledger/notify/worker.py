"""``agentledger notify``: follow the ledger and send webhooks (docs/notifications.md).

Sources, each read the way its writer means it:

- new approval requests are ``approval.requested`` events on ``agent.events`` (the
  approvals topic only carries a request once somebody voted), read by a consumer group
  (``agentledger-notify``) that commits after each batch is handed to the senders; a new
  group starts at the beginning of the topic and skips requests already expired;
- decided requests are on ``agent.approvals`` and breaker / safe-mode / override
  transitions on ``agent.control``, both compacted and signed by the ledger, read from the
  start (:class:`~agentledger.core.follower.CompactedFollower`) and obeyed only when the
  signature verifies; transitions older than ``max_age_s`` (the replay of a compacted
  topic at start) are not announced;
- SLA clocks are kept here: a pending request gets a warning at ``sla_warning_fraction`` of
  its queue's ``sla_s`` and a breach notice at ``sla_s``, unless decided or expired first.

Each notice goes to every webhook that wants its kind, tenant and queue, once: the
delivery id is a hash of (webhook, kind, tenant, subject) and the delivery log
(``agent.webhooks``, read at start) remembers what was sent before a restart.

SLA clocks live in memory; at start the requests still pending are read back from the
ledger API (:mod:`.backlog`), so a restart loses no clock (only a notice due while the
worker was down comes late).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from confluent_kafka import Consumer, KafkaException
from pydantic import ValidationError

from agentledger.auth import client_key
from agentledger.core import discovery, signing
from agentledger.core.follower import CompactedFollower
from agentledger.core.kafka import client_config
from agentledger.core.settings import Settings
from agentledger.notify import config as cfg
from agentledger.notify.backlog import pending_requests
from agentledger.notify.deliveries import DeliveryFollower, DeliveryLog, DeliveryRecord
from agentledger.notify.payloads import Notice
from agentledger.notify.sender import deliver
from agentledger.schemas import topics
from agentledger.schemas.approvals import APPROVALS_TOPIC, FINAL_STATES
from agentledger.schemas.signals import HALTED, OPEN, READ_ONLY, ControlSignal

log = logging.getLogger(__name__)

GROUP = "agentledger-notify"
HELD = (READ_ONLY, HALTED)
MAX_REMEMBERED = 50_000


class _Tap(CompactedFollower):
    """A compacted topic's verified records, handed over through a queue."""

    def __init__(self, bootstrap: str, topic: str, purpose: str,
                 trusted: signing.Keyring | Literal["auto"] | None,
                 security: dict[str, str] | None):
        super().__init__(bootstrap, topic, purpose=purpose, trusted=trusted,
                         security=security, name=f"notify-{topic}")
        self.records: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
        if value is None:
            return False
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(raw, dict) or not self.verifier.admit(raw, (key or b"").decode()):
            return False
        self.records.put(raw)
        return True


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


class Notifier:
    """The worker. :meth:`start` it, :meth:`close` it; :attr:`sent` counts deliveries."""

    def __init__(self, settings: Settings, bootstrap: str, *, config_path: Path | None = None,
                 key: signing.LedgerKey | None = None,
                 trusted: signing.Keyring | Literal["auto"] | None = "auto",
                 console_url: str | None = None, max_age_s: float = 600.0,
                 senders: int = 4, tick_s: float = 0.2, api_url: str | None = None,
                 api_key: str | None = None):
        """``api_url``/``api_key``: where to read the requests pending at start (default:
        the local stack's API and operator key, see :mod:`.backlog`)."""
        self.settings = settings
        self.bootstrap = bootstrap
        self.config_path = config_path or cfg.webhooks_file(settings)
        self.console_url = console_url.rstrip("/") if console_url else None
        self.max_age_s = max_age_s
        self.api_url, self.api_key = api_url, api_key
        self.tick_s = tick_s
        self.config = cfg.WebhooksConfig()
        self._config_stamp: tuple[int, int] | None = None
        self._key = key or signing.ledger_key(settings)
        self._trusted = trusted
        security = settings.kafka_security
        self._security = security
        self.deliveries = DeliveryFollower(bootstrap, security=security, trusted=trusted)
        self.approvals = _Tap(bootstrap, APPROVALS_TOPIC, signing.APPROVAL, trusted, security)
        self.control = _Tap(bootstrap, topics.CONTROL, signing.CONTROL, trusted, security)
        self.log = DeliveryLog(bootstrap, self._key, security)
        self.pending: dict[str, dict[str, Any]] = {}
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._dispatching = threading.Lock()
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="webhook")
        self._http = httpx.Client(follow_redirects=False)
        self._threads: list[threading.Thread] = []
        self.sent = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Notifier:
        self.reload()
        self.deliveries.start()
        self.deliveries.wait_caught_up(30)
        self.approvals.start()
        self.control.start()
        consumer = Consumer(client_config(
            self.bootstrap, "consumer", group_id=GROUP,
            extra={**(self._security or {}), "auto.offset.reset": "earliest"}))
        consumer.subscribe([topics.EVENTS])
        self._threads = [threading.Thread(target=self._events, args=(consumer,),
                                          name="notify-events", daemon=True),
                         threading.Thread(target=self._tick_loop, name="notify-tick",
                                          daemon=True),
                         threading.Thread(target=self._rebuild_loop, name="notify-backlog",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for follower in (self.approvals, self.control, self.deliveries):
            follower.close()
        self.log.close()
        self._http.close()

    def __enter__(self) -> Notifier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reload(self) -> None:
        """Read the webhooks file again if it changed; a broken file keeps the last one."""
        try:
            st = self.config_path.stat()
            stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp == self._config_stamp and self._config_stamp is not None:
            return
        try:
            self.config = cfg.load(self.config_path)
            self._config_stamp = stamp
        except cfg.ConfigError as exc:
            log.error("webhooks file not (re)loaded: %s", exc)

    # -- sources --------------------------------------------------------------------------

    def _events(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = consumer.consume(500, 0.2)
                except KafkaException as exc:
                    log.warning("events consumer: %s", exc)
                    continue
                for msg in batch:
                    value = msg.value()
                    if msg.error() is None and value and b"approval.requested" in value:
                        self._requested(value)
                if batch:
                    with contextlib.suppress(KafkaException):
                        consumer.commit(asynchronous=True)
        finally:
            consumer.close()

    def _requested(self, value: bytes) -> None:
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict) and event.get("event_type") == "approval.requested":
            self.take_request(event)

    def rebuild(self) -> list[str]:
        """Take the requests the ledger still holds pending (:mod:`.backlog`); their ids.
        Tried in the background at start until the API answers (``agentledger up``
        starts the API beside this worker)."""
        found = discovery.lookup(self.settings, discovery.STORE_FILE) or {}
        url = self.api_url or self.settings.api_url or found.get("api_url")
        key = self.api_key or client_key(self.settings)
        if not url or not key:
            raise LookupError("no ledger API or key to read pending requests from")
        events = pending_requests(str(url), key)
        for event in events:
            self.take_request(event)
        return [e["body"]["approval_id"] for e in events]

    def _rebuild_loop(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                log.info("pending approval requests taken from the ledger: %d",
                         len(self.rebuild()))
                return
            except (LookupError, httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            self._stop.wait(2.0)
        log.warning("pending requests not read from the ledger: %s", last)

    def take_request(self, event: dict[str, Any]) -> None:
        """One ``approval.requested`` event: announce it and start its SLA clock."""
        body = event.get("body") or {}
        approval_id = body.get("approval_id")
        if not approval_id or approval_id in self._decided or approval_id in self.pending:
            return
        requested_at = _epoch(event.get("ts"))
        expires_in = body.get("expires_in_s")
        expires_at = requested_at + (float(expires_in) if expires_in else self.max_age_s)
        if expires_at <= time.time():
            return  # expired already (a new group reading old history)
        tenant, agent, queue_ = str(event.get("tenant")), str(event.get("agent")), \
            str(body.get("approver") or "")
        run_id = str(event.get("run_id") or "")
        need = body.get("approvals_required") or 1
        item = {"approval_id": approval_id, "tenant": tenant, "agent": agent,
                "queue": queue_, "run_id": run_id, "action": str(body.get("action") or ""),
                "reason": body.get("reason") or "", "need": need,
                "requested_at": requested_at, "expires_at": expires_at,
                "sla_s": body.get("sla_s"), "args": body.get("args") or {},
                "warned": False, "breached": False}
        self.pending[approval_id] = item
        self.dispatch(self._approval_notice(cfg.APPROVAL_REQUESTED, item))

    def _approval_notice(self, kind: str, item: dict[str, Any]) -> Notice:
        what = item["action"] or "a tool call"
        if kind == cfg.APPROVAL_REQUESTED:
            title = f"Approval needed: {what}"
            text = (f"{item['agent']} asks {item['need']} x {item['queue']} to approve "
                    f"{what} (run {item['run_id']})")
        else:
            left = item["requested_at"] + float(item["sla_s"] or 0) - time.time()
            title = (f"SLA breached: {what}" if kind == cfg.SLA_BREACHED
                     else f"SLA about to be breached: {what}")
            text = (f"request {item['approval_id']} of {item['agent']} has waited "
                    f"{time.time() - item['requested_at']:.0f}s in queue {item['queue']} "
                    f"(SLA {float(item['sla_s'] or 0):.0f}s"
                    + (f", {left:.0f}s left)" if left > 0 else ")"))
        if item["reason"]:
            text += f"; policy: {item['reason']}"
        link = f"{self.console_url}/console/inbox" if self.console_url else None
        return Notice(kind, item["tenant"], item["approval_id"], title, text,
                      queue=item["queue"], link=link, data={
                          k: item[k] for k in ("approval_id", "agent", "run_id", "action",
                                               "need", "sla_s", "requested_at", "expires_at",
                                               "args")})

    def _control(self, raw: dict[str, Any]) -> None:
        try:
            signal = ControlSignal.model_validate(raw)
        except ValidationError:
            return
        if signal.emitted_at.timestamp() < time.time() - self.max_age_s:
            return
        kind = None
        if signal.kind == "breaker" and signal.state == OPEN and signal.previous_state != OPEN:
            kind = cfg.BREAKER_OPENED
            title = f"Breaker open: {signal.scope.split('/')[-1]} in {signal.tenant}"
        elif signal.kind in ("safe_mode", "override") and signal.state in HELD \
                and signal.previous_state != signal.state:
            kind = cfg.SAFE_MODE_ENTERED
            how = "held by hand" if signal.kind == "override" else f"rule {signal.rule}"
            title = f"Safe mode {signal.state}: {signal.scope} ({how})"
        if kind is None:
            return
        link = (f"{self.console_url}/console/control?scope={signal.scope}"
                if self.console_url else None)
        self.dispatch(Notice(kind, signal.tenant, f"{signal.key}@{signal.version}", title,
                             signal.reason or signal.state, link=link,
                             ts=signal.ts.timestamp(), data={
                                 "scope": signal.scope, "kind": signal.kind,
                                 "rule": signal.rule, "state": signal.state,
                                 "previous_state": signal.previous_state,
                                 "version": signal.version, "details": signal.details}))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # one bad tick must not end notifications
                log.exception("notify tick failed")

    def tick(self, now: float | None = None) -> None:
        """Take what the followers read, run the SLA clocks, re-read the config."""
        self.reload()
        while True:
            try:
                raw = self.approvals.records.get_nowait()
            except queue.Empty:
                break
            if raw.get("status") in FINAL_STATES and raw.get("approval_id"):
                self._remember(self._decided, str(raw["approval_id"]))
                self.pending.pop(str(raw["approval_id"]), None)
        while True:
            try:
                raw = self.control.records.get_nowait()
            except queue.Empty:
                break
            self._control(raw)
        if self.console_url is None:  # the API publishes its URL once it is up
            found = discovery.lookup(self.settings, discovery.STORE_FILE) or {}
            if found.get("api_url"):
                self.console_url = str(found["api_url"]).rstrip("/")
        now = time.time() if now is None else now
        for approval_id, item in list(self.pending.items()):
            if now >= item["expires_at"]:
                del self.pending[approval_id]
                continue
            sla = float(item["sla_s"] or 0)
            if not sla:
                continue
            waited = now - item["requested_at"]
            if waited >= sla and not item["breached"]:
                item["breached"] = item["warned"] = True
                self.dispatch(self._approval_notice(cfg.SLA_BREACHED, item))
            elif waited >= sla * self.config.sla_warning_fraction and not item["warned"]:
                item["warned"] = True
                self.dispatch(self._approval_notice(cfg.SLA_WARNING, item))

    # -- sending --------------------------------------------------------------------------

    @staticmethod
    def _remember(seen: OrderedDict[str, None], key: str) -> None:
        seen[key] = None
        while len(seen) > MAX_REMEMBERED:
            seen.popitem(last=False)

    def dispatch(self, notice: Notice) -> int:
        """Hand ``notice`` to a sender for every webhook that wants it and has not had it;
        how many deliveries started."""
        started = 0
        config = self.config
        for hook in config.webhooks:
            if not hook.wants(notice.kind, notice.tenant, notice.queue):
                continue
            delivery_id = notice.delivery_id(hook.name)
            with self._dispatching:  # the events, backlog and tick threads all dispatch
                if delivery_id in self._sent or delivery_id in self.deliveries.records:
                    continue
                self._remember(self._sent, delivery_id)
            self._pool.submit(self._deliver, hook, notice, config)
            started += 1
        return started

    def _deliver(self, hook: cfg.Webhook, notice: Notice, config: cfg.WebhooksConfig) -> None:
        try:
            deliver(self._http, hook, notice, config, self._publish, self._stop)
            self.sent += 1
        except Exception:
            log.exception("webhook delivery failed", extra={"webhook": hook.name})

    def _publish(self, record: DeliveryRecord) -> None:
        try:
            self.log.publish(record)
        except (TimeoutError, KafkaException) as exc:
            log.warning("delivery record not published: %s", exc)
