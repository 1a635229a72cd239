"""``GET /v1/control/stream``: the control state as server-sent events, for any language.

An agent that is not written in Python (so has no ``SafeModeGuard``) follows breakers,
safe mode, budgets and overrides here: first one ``state`` event per current scope, then
``ready``, then a ``transition`` event per change, each ``data`` the control signal's
JSON and each ``id`` ``<key>@<version>`` (so a client can drop a repeat). Only scopes of
the key's tenants are sent. A ``: keepalive`` comment every 15 s keeps proxies open.

One :class:`agentledger.producers.guard.ControlFollower` per API process reads ``agent.control`` and
fans out to every connected stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from agentledger.api.deps import bootstrap_of, principal
from agentledger.auth import Principal
from agentledger.producers.guard import ControlFollower
from agentledger.schemas.signals import ControlSignal

router = APIRouter(tags=["control"])
KEEPALIVE_S = 15.0


class ControlHub:
    """The follower and the queues of the connected streams."""

    def __init__(self, bootstrap: str, security: dict[str, str] | None):
        self.follower = ControlFollower(bootstrap, security=security)
        self._subs: dict[int, tuple[Principal, str | None, asyncio.Queue[ControlSignal], Any]] = {}
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
        for who, tenant, queue, loop in subs:
            if _visible(signal, who, tenant):
                loop.call_soon_threadsafe(queue.put_nowait, signal)

    def subscribe(self, who: Principal,
                  tenant: str | None) -> tuple[int, asyncio.Queue[ControlSignal]]:
        queue: asyncio.Queue[ControlSignal] = asyncio.Queue()
        with self._lock:
            token = id(queue)
            self._subs[token] = (who, tenant, queue, asyncio.get_running_loop())
        return token, queue

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subs.pop(token, None)

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
            hub = app.state.control_hub = ControlHub(bootstrap, settings.kafka_security)
        return hub


def stop(app: FastAPI) -> None:
    hub = getattr(app.state, "control_hub", None)
    if hub is not None:
        hub.close()


# Not in the OpenAPI document: an endless stream is not a request/response operation (a
# generic client or fuzzer would wait on it forever); docs/otel.md documents it.
@router.get("/v1/control/stream", summary="control state, then each transition (SSE)",
            response_class=StreamingResponse, include_in_schema=False)
async def control_stream(
    request: Request, who: Annotated[Principal, Depends(principal)],
    tenant: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> StreamingResponse:
    if tenant is not None and not who.allowed(tenant):
        raise HTTPException(403, "this key may not read the requested tenant")
    hub = await run_in_threadpool(hub_of, request.app)
    token, queue = hub.subscribe(who, tenant)

    async def frames() -> AsyncIterator[str]:
        try:
            current = hub.snapshot(who, tenant)
            for signal in current:
                yield _frame("state", signal)
            yield f"event: ready\ndata: {{\"scopes\": {len(current)}}}\n\n"
            while not await request.is_disconnected():
                try:
                    signal = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield _frame("transition", signal)
        finally:
            hub.unsubscribe(token)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
