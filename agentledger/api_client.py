"""How the CLI reads the ledger: always through the ledger API.

When a process owns the store (``agentledger up``, ``sink`` or ``api``), the CLI calls
its API with ``AGENTLEDGER_API_KEY`` or this machine's operator key. When none does, the
CLI opens the store itself and serves the same API on a private loopback port for the
length of the command, with a one-time key. Either way there is one code path for every
answer, and chdb's one-process rule stays invisible to users.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

import httpx

from agentledger.auth import KeyRing, client_key, entry_for, new_key
from agentledger.core import discovery
from agentledger.core.settings import Settings
from agentledger.core.store import claim_store, client_for
from agentledger.queries.sql import QueryResult


class LedgerError(RuntimeError):
    """The API refused or could not answer; the message is its explanation."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LedgerClient:
    def __init__(self, url: str, key: str | None, *, timeout_s: float = 120,
                 on_close: Callable[[], None] | None = None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url, timeout=timeout_s, headers=headers)
        self._on_close = on_close
        self.url = url

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LedgerError(f"ledger API at {self.url} unreachable: {exc}") from None
        if response.status_code >= 400:
            detail = response.text
            if response.headers.get("content-type", "").startswith("application/json"):
                detail = response.json().get("detail", detail)
            if response.status_code == 401:
                detail += " (set AGENTLEDGER_API_KEY to a key this API accepts)"
            raise LedgerError(f"{detail}", response.status_code)
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("POST", path, json=body).json()

    def raw(self, path: str, **params: Any) -> httpx.Response:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean)

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              max_rows: int = 10_000) -> QueryResult:
        body = self.post("/v1/sql", {"sql": sql, "parameters": parameters,
                                     "max_rows": max_rows})
        return QueryResult(body["columns"], body["types"], body["rows"])

    def close(self) -> None:
        self._http.close()
        if self._on_close:
            self._on_close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_for_stack_api(settings: Settings, timeout_s: float) -> str | None:
    """The store API of a live ``agentledger up``, waiting while it starts or restarts.

    A reader must never take the store from a stack that is starting: the stack's sink
    would then fail to claim it. While a supervisor lives, wait for its API instead.
    """
    deadline = time.monotonic() + timeout_s
    while discovery.lookup(settings, discovery.SUPERVISOR_FILE) is not None:
        url = discovery.store_api_url(settings)
        if url:
            return url
        if time.monotonic() > deadline:
            raise LedgerError(
                f"agentledger up is running but its store API did not answer within "
                f"{timeout_s:.0f}s (starting, or the sink is restarting): "
                "see agentledger health, or retry")
        time.sleep(0.1)  # polling the run directory for the store service's file
    return discovery.store_api_url(settings)


def open_ledger(settings: Settings, *, wait_s: float = 60) -> LedgerClient:
    """A client of the running API, or of a private one over the store if none runs."""
    url = discovery.store_api_url(settings) or _wait_for_stack_api(settings, wait_s)
    if url:
        return LedgerClient(url, client_key(settings))
    from agentledger.services import open_store, start_api

    lock: IO[str] | None = claim_store(settings)
    try:
        open_store(settings).close()
        key = new_key()
        api = start_api(settings, client_for(settings), keys=KeyRing(
            [entry_for("cli@local", key, ["*"])]), host="127.0.0.1", port=0)
    except BaseException:
        if lock:
            lock.close()
        raise

    def stop() -> None:
        api.stop()
        if lock:
            lock.close()

    return LedgerClient(api.url, key, on_close=stop)
