"""``GET /v1/control/stream``: the control state as server-sent events, for any language.

An agent that is not written in Python (so has no ``SafeModeGuard``) follows breakers,
safe mode, budgets and overrides here: first one ``state`` event per current scope, then
``ready``, then a ``transition`` event per change, each ``data`` the control signal's
JSON and each ``id`` ``<key>@<version>`` (so a client can drop a repeat). Only scopes of
the key's tenants are sent. A ``: keepalive`` comment every 15 s keeps proxies open.

One :class:`agentledger.producers.guard.ControlFollower` per API process reads ``agent.control`` and
fans out to every connected stream.

Bounds, so that no key can make the process hold unbounded memory: one key holds at most
``control_streams_per_key`` streams at once (one more is a 429 naming the cap); each
stream's queue holds at most ``control_stream_queue`` signals. A client that falls that
far behind is dropped: its queue is let go at once, and the stream ends with a last
``event: close`` whose data is ``{"code": "slow_consumer", "reason": ...}`` (the client
reads it after what it had not read yet, and reconnects for a fresh ``state`` snapshot).
A client that never reads again is cut off :data:`DROP_GRACE_S` later. A stream whose
key was removed from the keys file ends the same way with code ``key_revoked`` within a
second; other streams are untouched.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from agentledger.api.deps import bootstrap_of, presented_key, principal
from agentledger.auth import Principal, hash_key
from agentledger.producers.guard import ControlFollower
from agentledger.schemas.signals import ControlSignal

router = APIRouter(tags=["control"])
KEEPALIVE_S = 15.0
RECHECK_S = 0.5
"""How often an open stream looks again at its key (a removed key ends it)."""
DROP_GRACE_S = 10.0
"""How long a dropped stream may take to deliver its ``close`` before the connection is
cut: a client that never reads again must not hold a coroutine and buffers forever."""
SLOW_CONSUMER = "slow_consumer"
KEY_REVOKED = "key_revoked"


class TooManyStreams(RuntimeError):
    """The key holds its cap of control streams already."""


@dataclass(eq=False)
class Subscriber:
    """One connected stream: what it may see, its bounded queue, and why it was dropped."""

    who: Principal
    key_id: str
    tenant: str | None
    queue: asyncio.Queue[ControlSignal]
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: dict[str, str] | None = None
    task: asyncio.Task[object] | None = None
    """The task serving the stream: cancelled :data:`DROP_GRACE_S` after a drop."""
    cut: asyncio.TimerHandle | None = None


class ControlHub:
    """The follower and the queues of the connected streams."""

    def __init__(self, bootstrap: str, security: dict[str, str] | None, *,
                 per_key: int = 8, queue_size: int = 256):
        self.per_key = per_key
        self.queue_size = queue_size
        self.dropped = 0
        """Streams dropped for falling behind, since start."""
        self.refused = 0
        """Streams refused for the per-key cap, since start."""
        self.follower = ControlFollower(bootstrap, security=security)
        self._subs: dict[int, Subscriber] = {}
        self._lock = threading.Lock()
        self.follower.on_signal(self._fanout)
        self.follower.start()
        self._settle()

    def _settle(self, timeout_s: float = 3.0, quiet_s: float = 0.3) -> None:
        """Let the follower read the compacted topic (the current state) before serving."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            heard = self.follower.last_heard
            if heard and time.monotonic() - heard >= quiet_s:
                return
            time.sleep(0.05)

    def _fanout(self, signal: ControlSignal) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:
            if _visible(signal, sub.who, sub.tenant):
                sub.loop.call_soon_threadsafe(self._offer, sub, signal)

    def _offer(self, sub: Subscriber, signal: ControlSignal) -> None:
        """On the stream's loop: queue the signal, or drop the stream if its queue is full
        (the slowest client goes; nobody else waits for it and its memory is let go)."""
        if sub.dropped is not None:
            return
        try:
            sub.queue.put_nowait(signal)
            sub.wake.set()
        except asyncio.QueueFull:
            self.drop(sub, SLOW_CONSUMER,
                      f"more than {self.queue_size} control signals waited for this client "
                      "(control_stream_queue); reconnect for a fresh state snapshot")

    def drop(self, sub: Subscriber, code: str, reason: str) -> None:
        """End ``sub``'s stream with a ``close`` event (called on its loop)."""
        if sub.dropped is not None:
            return
        sub.dropped = {"code": code, "reason": reason}
        if code == SLOW_CONSUMER:
            self.dropped += 1
        self.unsubscribe(id(sub))
        while not sub.queue.empty():  # let its backlog go now, not when it reads
            sub.queue.get_nowait()
        sub.wake.set()
        if sub.task is not None:  # a client that never reads again must not stay forever
            sub.cut = sub.loop.call_later(DROP_GRACE_S, sub.task.cancel)

    def subscribe(self, who: Principal, tenant: str | None, key_id: str) -> Subscriber:
        """A new stream's subscriber; :class:`TooManyStreams` if the key is at its cap."""
        sub = Subscriber(who, key_id, tenant, asyncio.Queue(maxsize=self.queue_size),
                         asyncio.get_running_loop())
        with self._lock:
            if sum(1 for s in self._subs.values() if s.key_id == key_id) >= self.per_key:
                self.refused += 1
                raise TooManyStreams(
                    f"this key has {self.per_key} control streams open already (the "
                    "cap, AGENTLEDGER_CONTROL_STREAMS_PER_KEY); close one first")
            self._subs[id(sub)] = sub
        return sub

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subs.pop(token, None)

    def open_streams(self, key_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._subs.values() if key_id is None or s.key_id == key_id)

    def snapshot(self, who: Principal, tenant: str | None) -> list[ControlSignal]:
        return sorted((s for s in list(self.follower.state.values())
                       if _visible(s, who, tenant)), key=lambda s: s.key)

    def close(self) -> None:
        self.follower.close()


def _visible(signal: ControlSignal, who: Principal, tenant: str | None) -> bool:
    return who.allowed(signal.tenant) and (tenant is None or signal.tenant == tenant)


def _frame(kind: str, signal: ControlSignal) -> str:
    return f"event: {kind}\nid: {signal.key}@{signal.version}\ndata: " \
           f"{signal.model_dump_json()}\n\n"


def hub_of(app: FastAPI) -> ControlHub:
    with app.state.otlp_lock:
        hub = getattr(app.state, "control_hub", None)
        if hub is None:
            settings, bootstrap = bootstrap_of(app)
            hub = app.state.control_hub = ControlHub(
                bootstrap, settings.kafka_security, per_key=settings.control_streams_per_key,
                queue_size=settings.control_stream_queue)
        return hub


def stop(app: FastAPI) -> None:
    hub = getattr(app.state, "control_hub", None)
    if hub is not None:
        hub.close()


def _close_frame(dropped: dict[str, str]) -> str:
    return f"event: close\ndata: {json.dumps(dropped)}\n\n"


# Not in the OpenAPI document: an endless stream is not a request/response operation (a
# generic client or fuzzer would wait on it forever); docs/otel.md documents it.
@router.get("/v1/control/stream", summary="control state, then each transition (SSE)",
            response_class=StreamingResponse, include_in_schema=False)
async def control_stream(
    request: Request, who: Annotated[Principal, Depends(principal)],
    presented: Annotated[str, Depends(presented_key)],
    tenant: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> StreamingResponse:
    if tenant is not None and not who.allowed(tenant):
        raise HTTPException(403, "this key may not read the requested tenant")
    hub = await run_in_threadpool(hub_of, request.app)
    try:
        sub = hub.subscribe(who, tenant, hash_key(presented))
    except TooManyStreams as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from None
    keys = request.app.state.keys

    async def frames() -> AsyncIterator[str]:
        sub.task = asyncio.current_task()
        try:
            current = hub.snapshot(who, tenant)
            for signal in current:
                yield _frame("state", signal)
            yield f"event: ready\ndata: {{\"scopes\": {len(current)}}}\n\n"
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                if sub.dropped is None and keys.authenticate(presented) is None:
                    hub.drop(sub, KEY_REVOKED, "this API key was removed")
                if sub.dropped is not None:
                    yield _close_frame(sub.dropped)
                    return
                if sub.queue.empty():
                    sub.wake.clear()
                    try:
                        await asyncio.wait_for(sub.wake.wait(), RECHECK_S)
                    except TimeoutError:
                        if time.monotonic() - quiet_since >= KEEPALIVE_S:
                            quiet_since = time.monotonic()
                            yield ": keepalive\n\n"
                        continue
                if not sub.queue.empty():
                    quiet_since = time.monotonic()
                    yield _frame("transition", sub.queue.get_nowait())
        finally:
            if sub.cut is not None:
                sub.cut.cancel()
            hub.unsubscribe(id(sub))

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

