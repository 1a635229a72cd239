"""How the CLI reads the store: through the owning process's API when one runs, else
directly. This is what keeps chdb's one-process rule invisible to users."""

from __future__ import annotations

from typing import IO, Any, Protocol

import httpx

from agentledger import discovery
from agentledger.clickhouse import claim_store
from agentledger.query import QueryResult, run_read_only
from agentledger.settings import Settings


class ReadError(RuntimeError):
    pass


class Reader(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              max_rows: int = 10_000) -> QueryResult: ...

    def close(self) -> None: ...


class ApiReader:
    def __init__(self, url: str, timeout_s: float = 60):
        self._http = httpx.Client(base_url=url, timeout=timeout_s)

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              max_rows: int = 10_000) -> QueryResult:
        try:
            response = self._http.post("/v1/sql", json={"sql": sql, "parameters": parameters,
                                                        "max_rows": max_rows})
        except httpx.HTTPError as exc:
            raise ReadError(f"ledger API at {self._http.base_url} unreachable: {exc}") from None
        if response.status_code != 200:
            detail = response.json().get("detail", response.text) if response.headers.get(
                "content-type", "").startswith("application/json") else response.text
            raise ReadError(f"query refused ({response.status_code}): {detail}")
        body = response.json()
        return QueryResult(body["columns"], body["types"], body["rows"])

    def close(self) -> None:
        self._http.close()


class DirectReader:
    def __init__(self, settings: Settings):
        from agentledger.services import open_store

        self._lock: IO[str] | None = claim_store(settings)
        self._client = open_store(settings)

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              max_rows: int = 10_000) -> QueryResult:
        return run_read_only(self._client, sql, parameters, max_rows=max_rows)

    def close(self) -> None:
        self._client.close()
        if self._lock:
            self._lock.close()


def open_reader(settings: Settings) -> Reader:
    url = discovery.store_api_url(settings)
    if url:
        return ApiReader(url)
    return DirectReader(settings)
