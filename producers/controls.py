"""Agent-side controls of one tool action, from the catalog: timeout, retries, read-back.

The tool catalog (``catalog.yaml``, :mod:`agentledger.producers.tool_policy_files`) may
give a tool, or one of its actions, ``timeout_s``, ``retries``, ``backoff_s``,
``backoff_max_s`` and ``retry_on``; :class:`ToolControls` holds them, and
:meth:`agentledger.producers.context.ToolCallContext.invoke` applies them to the callable
that makes the call:

- **timeout**: each attempt is bounded by ``timeout_s``. A synchronous callable runs on a
  daemon thread the caller stops waiting for (Python cannot kill a thread: the call may
  still finish in the background, which is why a retried write reuses its idempotency
  key); a coroutine is cancelled (``asyncio.wait_for``). Either way the attempt is
  recorded ``status=timeout`` and :class:`ToolTimeout` (a ``TimeoutError``) is raised.
- **retries**: an attempt that fails retryably (:func:`retryable`) is tried again, up to
  ``retries`` more times, after a pause drawn with *full jitter* (AWS's "Exponential
  Backoff And Jitter"): uniform in ``[0, min(backoff_max_s, backoff_s * 2**(n-1))]``
  before attempt ``n + 1``. Every attempt is its own ``tool.call``/``tool.result`` pair
  with its ``attempt`` number and the call's one idempotency key.

Delivery semantics: at most ``retries + 1`` attempts of the callable; whether the tool
applied a write more than once is the tool's idempotency key's business (the key is the
same on every attempt, so a tool that honours it applies the write once).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = "timeout"
"""In ``retry_on``: an attempt that ran out of its ``timeout_s`` is retried."""


class Retryable(Exception):
    """Raise (or subclass) this from a tool callable to say "try again": always retried
    while attempts remain, whatever the catalog's ``retry_on`` says."""


class ToolTimeout(TimeoutError):
    """An attempt of a tool call ran out of the catalog's ``timeout_s``."""

    def __init__(self, tool: str, action: str, timeout_s: float, attempt: int):
        super().__init__(f"{tool}:{action} attempt {attempt} timed out after {timeout_s:g}s")
        self.tool = tool
        self.action = action
        self.timeout_s = timeout_s
        self.attempt = attempt


@dataclass(frozen=True, slots=True)
class ToolControls:
    """The catalog's controls of one action (the defaults: no timeout, no retry)."""

    timeout_s: float | None = None
    retries: int = 0
    backoff_s: float = 0.2
    backoff_max_s: float = 20.0
    retry_on: tuple[str | int, ...] = ()
    """Exception class names (matched along the exception's class hierarchy, e.g.
    ``ConnectionError``), HTTP statuses (an int, matched against the exception's
    ``status_code`` or ``status``, or its ``response.status_code``) and ``timeout``."""

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def as_dict(self) -> dict[str, Any]:
        """What ``POST /v1/gate/check`` tells an agent in another language to apply."""
        return {"timeout_s": self.timeout_s, "retries": self.retries,
                "backoff_s": self.backoff_s, "backoff_max_s": self.backoff_max_s,
                "retry_on": list(self.retry_on)}


NO_CONTROLS = ToolControls()


def backoff(attempt: int, controls: ToolControls, rng: random.Random | None = None) -> float:
    """The pause after failed attempt ``attempt`` (1-based): full jitter, uniform in
    ``[0, min(backoff_max_s, backoff_s * 2**(attempt-1))]``."""
    cap = min(controls.backoff_max_s, controls.backoff_s * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0.0, cap)


def _status_of(exc: BaseException) -> int | None:
    for owner in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def retryable(exc: BaseException, controls: ToolControls) -> bool:
    """Whether ``exc`` ends an attempt that may be tried again (see :class:`ToolControls`)."""
    if isinstance(exc, Retryable):
        return True
    if isinstance(exc, ToolTimeout):
        return TIMEOUT in controls.retry_on
    names = {cls.__name__ for cls in type(exc).__mro__}
    if any(isinstance(r, str) and r in names for r in controls.retry_on):
        return True
    status = _status_of(exc)
    return status is not None and status in controls.retry_on


def bounded(fn: Callable[[], T], timeout_s: float | None, on_timeout: Callable[[], Exception]
            ) -> T:
    """``fn()``, or ``on_timeout()`` raised once ``timeout_s`` passed (see the module doc:
    the thread is left to finish on its own)."""
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="tool-call", daemon=True).start()
    if not done.wait(timeout_s):
        raise on_timeout()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
