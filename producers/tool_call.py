"""A tool call's context: ``tool.call`` on enter, ``tool.result`` on :meth:`result` or exit,
and :meth:`ToolCallContext.invoke` to make the call under the catalog's controls."""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from opentelemetry.trace import Span, Status, StatusCode

from agentledger.producers.controls import (
    NO_CONTROLS,
    ToolControls,
    ToolTimeout,
    backoff,
    bounded,
    retryable,
)
from agentledger.producers.digests import sha256_json

T = TypeVar("T")
ReadBack = Callable[[Any], Any]
"""Given the call's result, truthy if the write is confirmed (may be a coroutine function
for :meth:`ToolCallContext.ainvoke`); an exception counts as not confirmed."""



class CallingRun(Protocol):
    """What a tool call needs of its run (a :class:`~agentledger.producers.context.
    RunContext`), named here so this module does not import the run's."""

    run_id: str
    ledger: Any
    totals: dict[str, Any]

    def emit(self, event_type: str, body: dict[str, Any], span: Span | None = None) -> str: ...

    def _child_span(self, name: str, start_ns: int | None = None,
                    attributes: Mapping[str, Any] | None = None) -> Span: ...


class ToolCallContext:
    """A tool call: ``tool.call`` on enter, ``tool.result`` on :meth:`result` or exit.

    Args are redacted before they are hashed or sent; ``args_hash`` is over the redacted
    args, so no digest of a secret leaves the agent either. Leaving the block by an
    exception without a result records ``status=error`` with the exception's type.

    :meth:`invoke` (or :meth:`ainvoke`) makes the call itself under the catalog's
    controls (:mod:`agentledger.producers.controls`): each attempt bounded by
    ``timeout_s``, retryable failures tried again after a full-jitter backoff (each
    attempt its own ``tool.call``/``tool.result`` pair, numbered in ``attempt``, with the
    same idempotency key), and an optional read-back recorded in ``verified``.
    """

    def __init__(self, run: CallingRun, tool: str, action: str, *, mode: str,
                 args: Mapping[str, Any], tool_version: str,
                 schema: Mapping[str, Any] | None, idempotency_key: str | None,
                 controls: ToolControls | None = None):
        self.run = run
        self.tool = tool
        self.action = action
        self.mode = mode
        self.args = run.ledger.redactor.redact(dict(args))
        self.tool_version = tool_version
        self.schema_hash = sha256_json(dict(schema or {}))
        self.idempotency_key = idempotency_key
        self.controls = controls or NO_CONTROLS
        self.attempt = 1
        self.verified: bool | None = None
        """The read-back's verdict after :meth:`invoke` (None: no read-back)."""
        self.done = False
        self._t0 = 0.0
        self._span: Span | None = None

    def _numbered(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the attempt number, on calls that may be retried."""
        if self.controls.retries or self.attempt > 1:
            body["attempt"] = self.attempt
        return body

    def _begin(self) -> None:
        self._t0 = time.perf_counter()
        self._span = self.run._child_span(f"tool.call {self.tool}.{self.action}", None,
                                          {"agentledger.tool": self.tool,
                                           "agentledger.mode": self.mode,
                                           "agentledger.attempt": self.attempt})
        self.run.emit("tool.call", self._numbered({
            "tool": self.tool, "action": self.action, "mode": self.mode,
            "tool_version": self.tool_version, "schema_hash": self.schema_hash,
            "args": self.args, "args_hash": sha256_json(self.args),
            "idempotency_key": self.idempotency_key,
        }), self._span)
        self.run.totals["tool_calls"] += 1

    def __enter__(self) -> ToolCallContext:
        self._begin()
        return self

    def _next_attempt(self) -> None:
        """Close this attempt's span and record the next attempt's ``tool.call``."""
        if self._span is not None:
            self._span.end()
        self.attempt += 1
        self.done = False
        self._begin()

    def _failed(self, exc: Exception, rng: random.Random | None) -> float | None:
        """Record a failed attempt; the pause before the next one, or None to give up."""
        timed_out = isinstance(exc, TimeoutError)
        self.result("timeout" if timed_out else "error", error_type=type(exc).__name__)
        if self.attempt >= self.controls.attempts or not retryable(exc, self.controls):
            return None
        return backoff(self.attempt, self.controls, rng)

    def _timeout(self) -> ToolTimeout:
        return ToolTimeout(self.tool, self.action, self.controls.timeout_s or 0.0,
                           self.attempt)

    def _succeeded(self, verified: bool | None,
                   side_effect: Mapping[str, str] | Callable[[Any], Mapping[str, str]] | None,
                   value: Any) -> None:
        self.verified = verified
        effect = side_effect(value) if callable(side_effect) else side_effect
        self.result("ok", side_effect=effect, verified=verified)

    def invoke(self, fn: Callable[..., T], *args: Any, read_back: ReadBack | None = None,
               side_effect: Mapping[str, str] | Callable[[Any], Mapping[str, str]] | None
               = None, rng: random.Random | None = None, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` under the catalog's controls (see the class doc); its
        value, after ``read_back(value)`` if given (its verdict in :attr:`verified` and the
        result's ``verified``; an unconfirmed write still returns its value). The last
        attempt's exception is raised (:class:`ToolTimeout` for a timeout)."""
        while True:
            try:
                value = bounded(lambda: fn(*args, **kwargs), self.controls.timeout_s,
                                self._timeout)
            except Exception as exc:
                pause = self._failed(exc, rng)
                if pause is None:
                    raise
                time.sleep(pause)  # the backoff itself, not synchronisation
                self._next_attempt()
                continue
            verified = None
            if read_back is not None:
                try:
                    verified = bool(read_back(value))
                except Exception:
                    verified = False
            self._succeeded(verified, side_effect, value)
            return value

    async def ainvoke(self, fn: Callable[..., Awaitable[T]], *args: Any,
                      read_back: ReadBack | None = None,
                      side_effect: Mapping[str, str] | Callable[[Any], Mapping[str, str]]
                      | None = None, rng: random.Random | None = None, **kwargs: Any) -> T:
        """:meth:`invoke` for a coroutine function: a timed-out attempt is cancelled."""
        while True:
            try:
                value = await asyncio.wait_for(fn(*args, **kwargs), self.controls.timeout_s)
            except Exception as exc:
                failure = self._timeout() if isinstance(exc, TimeoutError) else exc
                pause = self._failed(failure, rng)
                if pause is None:
                    if failure is exc:
                        raise
                    raise failure from exc
                await asyncio.sleep(pause)
                self._next_attempt()
                continue
            verified = None
            if read_back is not None:
                try:
                    found = read_back(value)
                    verified = bool(await found if inspect.isawaitable(found) else found)
                except Exception:
                    verified = False
            self._succeeded(verified, side_effect, value)
            return value

    def result(self, status: str = "ok", *, error_type: str | None = None,
               side_effect: Mapping[str, str] | None = None, verified: bool | None = None,
               latency_ms: float | None = None) -> str:
        assert self._span is not None, "result() outside the tool call's with-block"
        if latency_ms is None:
            latency_ms = round((time.perf_counter() - self._t0) * 1000, 3)
        self.done = True
        if status != "ok":
            self._span.set_status(Status(StatusCode.ERROR, error_type or status))
        return self.run.emit("tool.result", self._numbered({
            "tool": self.tool, "status": status, "error_type": error_type,
            "latency_ms": latency_ms, "side_effect": dict(side_effect) if side_effect else None,
            "verified": verified,
        }), self._span)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if not self.done:
            if exc_type is None:
                self.result("ok")
            else:
                timeout = issubclass(exc_type, TimeoutError)
                self.result("timeout" if timeout else "error", error_type=exc_type.__name__)
        if self._span is not None:
            self._span.end()
