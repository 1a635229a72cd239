"""Run the real sink in-process over a real broker and chdb store, for tests."""

from __future__ import annotations

import threading

from agentledger.core.settings import Settings
from agentledger.core.store import client_for
from agentledger.services import build_sink, open_store
from agentledger.sinks.consumer import SinkStats
from tests.helpers import wait_for


def run_sink(settings: Settings, expected: int, timeout_s: float = 60) -> SinkStats:
    """Run the sink until it has consumed ``expected`` messages, then stop it gracefully
    (which flushes and commits) and return its counters."""
    client = open_store(settings)
    sink = build_sink(settings, settings.kafka_bootstrap or "", client)
    result: list[SinkStats | BaseException] = []

    def target() -> None:
        try:
            result.append(sink.run())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sink.stats.consumed >= expected or result, timeout_s,
                 what=f"the sink to consume {expected} messages")
    finally:
        sink.stop()
        thread.join(60)
    client.close()
    assert result and not isinstance(result[0], BaseException), result
    return result[0]


def query(settings: Settings, sql: str, **params: object) -> list[tuple]:
    client = client_for(settings)
    try:
        return client.query(sql, parameters=params or None).result_rows
    finally:
        client.close()


def summary_rows(settings: Settings) -> dict[str, list[list]]:
    """The project's own summary queries, as the CLI runs them."""
    from agentledger.queries.sql import SUMMARY_QUERIES, run_read_only

    client = client_for(settings)
    try:
        return {title: run_read_only(client, sql).rows for title, sql in SUMMARY_QUERIES.items()}
    finally:
        client.close()


class SinkThread:
    """The real sink on a thread until the block ends (then it flushes and commits)."""

    def __init__(self, settings: Settings):
        self.client = open_store(settings)
        self.sink = build_sink(settings, settings.kafka_bootstrap or "", self.client)
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:
            self.error.append(exc)

    def __enter__(self) -> SinkThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.stop()
        self.thread.join(60)
        self.client.close()
        assert not self.error, self.error

    def query(self, sql: str, **params: object) -> list[tuple]:
        """Query the store the sink owns (chdb is one process, one owner)."""
        assert not self.error, self.error
        return self.client.query(sql, parameters=params or None).result_rows


def api_scalar(settings: Settings, sql: str) -> int:
    """One number from the store API of the process owning the store, -1 if none answers."""
    import httpx

    from agentledger.core import discovery

    info = discovery.lookup(settings, discovery.STORE_FILE)
    if not info:
        return -1
    try:
        key = (settings.run_dir / "api.key").read_text().strip()
        response = httpx.post(f"{info['api_url']}/v1/sql", timeout=10,
                              headers={"Authorization": f"Bearer {key}"}, json={"sql": sql})
    except (httpx.HTTPError, OSError):
        return -1
    return response.json()["rows"][0][0] if response.status_code == 200 else -1
