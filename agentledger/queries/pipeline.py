"""Is the pipeline itself healthy: the newest ``heartbeats`` row of every component.

The rules, each one a line in the health report's ``problems`` (any problem = degraded):

- the sink reported ``stalled`` (messages waiting, no commit progress for
  ``sink_stall_seconds``), or has not reported for ``silent_s`` (down or stuck);
- no stream worker heartbeat for ``silent_s`` although one was seen in the last
  ``LOOKBACK``; the stream workers' committed offsets more than ``streams_max_lag``
  events behind the end of ``agent.events``; the newest event a worker read older than
  ``streams_max_lag_s`` (its heartbeat's ``lag_s``); records its consumer skipped;
- a supervised child ``crash_looping``, ``restarting`` or ``stopped``; the embedded broker
  down, or restarted within ``LOOKBACK`` (its in-memory topics started empty);
- more than ``dlq_per_minute`` rejected messages per minute over the last 5 minutes;
- an OTLP run closer (``otlp-closer``, one per intake process) that has not beaten for
  ``silent_s`` although it beat in the last ``LOOKBACK`` (spans are answered but no run
  lands), or that failed to build a run in the last 10 minutes (its spans are in
  ``rejected_events`` as ``run_unbuildable``).

Silence is judged on the time the row was written, compared with ``now``: components run
on the same host as their clocks in the embedded stack, and on NTP'd hosts in production.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import rows

LOOKBACK: Final = dt.timedelta(minutes=10)
DLQ_WINDOW: Final = dt.timedelta(minutes=5)
_CHILD_PROBLEMS: Final = ("crash_looping", "restarting", "stopped")


@dataclass(frozen=True)
class HealthLimits:
    silent_s: float = 30.0
    streams_max_lag: int = 10_000
    dlq_per_minute: float = 60.0
    streams_max_lag_s: float = 30.0


def components(client: Client, now: dt.datetime) -> list[dict[str, Any]]:
    """The newest report per (component, instance) of the last ``LOOKBACK``."""
    found = rows(client, (
        "SELECT component, instance, argMax(status, ts) AS status, max(ts) AS last_seen, "
        "argMax(lag_events, ts) AS lag_events, argMax(details, ts) AS details "
        "FROM heartbeats WHERE ts >= {since:DateTime64(3, 'UTC')} "
        "GROUP BY component, instance ORDER BY component, instance"),
        {"since": now - LOOKBACK})
    for row in found:
        row["age_s"] = round((now - _utc(row["last_seen"])).total_seconds(), 1)
        row["details"] = json.loads(row["details"] or "{}")
    return found


def dlq_per_minute(client: Client, now: dt.datetime) -> float:
    count = rows(client, (
        "SELECT count() AS n FROM rejected_events FINAL "
        "WHERE received_at >= {since:DateTime64(3, 'UTC')}"), {"since": now - DLQ_WINDOW})
    per_minute: float = round(count[0]["n"] / (DLQ_WINDOW.total_seconds() / 60), 2)
    return per_minute


def problems(found: list[dict[str, Any]], dlq_rate: float, limits: HealthLimits) -> list[str]:
    """What is wrong, one readable line each; empty when the pipeline is healthy."""
    said: list[str] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_kind.setdefault(row["component"], []).append(row)
    sinks = by_kind.get("sink", [])
    if sinks:
        newest = min(sinks, key=lambda r: r["age_s"])
        lost = newest["details"].get("gaps_accepted")
        if lost:
            said.append(f"sink: {lost:,} offsets never delivered by the broker after "
                        "asking again (landed nothing for them; see the sink's log)")
        if newest["age_s"] > limits.silent_s:
            said.append(f"sink: no report for {newest['age_s']:.0f}s (down or stuck)")
        elif newest["status"] == "stalled":
            d = newest["details"]
            said.append(f"sink: stalled: {d.get('uncommitted', '?')} messages uncommitted, "
                        f"{newest['lag_events']} behind, no progress for "
                        f"{d.get('seconds_since_progress', '?')}s")
    workers = by_kind.get("streams", [])
    behind_s = ""
    if workers:
        newest = min(workers, key=lambda r: r["age_s"])
        lag_s, gaps = newest["details"].get("lag_s"), newest["details"].get("offset_gaps")
        if gaps:
            said.append(f"stream worker: {gaps:,} records of agent.events skipped by its "
                        "consumer (missing from its decisions)")
        if newest["age_s"] > limits.silent_s:
            said.append(f"stream worker: no heartbeat for {newest['age_s']:.0f}s")
        elif isinstance(lag_s, int | float):
            behind_s = f", {lag_s:.1f}s behind at its last heartbeat"
            if lag_s > limits.streams_max_lag_s:
                said.append(f"stream worker: deciding on events {lag_s:.1f}s old "
                            f"(limit {limits.streams_max_lag_s:.0f}s)")
    for row in by_kind.get("streams-lag", []):
        if row["age_s"] <= limits.silent_s and row["lag_events"] > limits.streams_max_lag:
            said.append(f"stream worker: {row['lag_events']:,} events behind agent.events"
                        f"{behind_s}")
    for row in by_kind.get("child", []):
        if row["age_s"] <= limits.silent_s and row["status"] in _CHILD_PROBLEMS:
            d = row["details"]
            said.append(f"{row['instance']}: {row['status']} ({d.get('restarts_recent', 0)} "
                        f"restarts in 5 min, last exit code {d.get('last_exit')})")
    for row in by_kind.get("broker", []):
        d = row["details"]
        ago = d.get("last_restart_ago_s")
        if row["age_s"] <= limits.silent_s and row["status"] != "ok":
            said.append(f"broker {row['instance']}: down")
        elif ago is not None and ago < LOOKBACK.total_seconds():
            said.append(f"broker {row['instance']}: restarted {ago:.0f}s ago; events "
                        "acknowledged before the restart but not yet landed were lost")
    for row in by_kind.get("otlp-closer", []):
        d = row["details"]
        if row["age_s"] > limits.silent_s:
            said.append(f"otlp closer {row['instance']}: no beat for {row['age_s']:.0f}s "
                        f"(dead or stuck: spans are answered but no run lands; last run "
                        f"closed {d.get('last_closed') or 'never'})")
        elif row["status"] == "failing":
            said.append(f"otlp closer {row['instance']}: {d.get('runs_failed', 0)} runs could "
                        f"not be built and {d.get('errors', 0)} closing rounds failed (spans in "
                        f"rejected_events as run_unbuildable); last: "
                        f"{d.get('last_failure') or d.get('last_error')}")
    if dlq_rate > limits.dlq_per_minute:
        said.append(f"dead letters: {dlq_rate:g} rejected messages per minute "
                    f"(limit {limits.dlq_per_minute:g})")
    return said


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
