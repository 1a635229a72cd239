"""Is anything missing? Every offset of ``agent.events`` the sink has committed either
landed (``events.kafka_partition``/``kafka_offset``) or was refused (``rejected_events``);
every offset of ``otlp_spans`` the Kafka intake has committed either became runs in the
store or was refused (:func:`reconcile_otlp`).

The sink's gap guard checks this only while it reads. This answers it after the fact, for
any period still in Kafka: per partition, the offsets from the retained low watermark (or
the first offset at ``since``) up to the sink group's committed offset are compared with
the store's, and every run of unaccounted offsets is named. A gap means rows were removed
from the store (by hand, or by a TTL shorter than Kafka's retention) or a sink lost them.

An event sent twice (two offsets, one ``event_id``) lands once, at its first copy; the
sink records where the other copies were (``duplicate_copies``), so their offsets are
accounted for too.

Limits: offsets Kafka no longer retains cannot be checked; with checkpoints off
(``AGENTLEDGER_CHECKPOINTS_ENABLED=false``) the copies are stored in ``events`` and one
offset of an event sent twice disappears once ClickHouse merges them, so it then shows
as a gap.

An ``otlp_spans`` message carries spans, not events, and one trace may span many
messages, so it is accounted by trace: the message was dead-lettered whole, or every
trace in it with a span of a known convention (``intake/mapping.py``) has events or
refused spans in the store. Traces of no convention and our own SDK's spans are not runs
and expect nothing. A span deleted from a run that still exists is not seen here; the
run's hash chain (``verify``) names it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final

from clickhouse_connect.driver.client import Client

from agentledger.queries.common import rows
from agentledger.schemas import topics

if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_GAPS: Final = 1000
"""Gaps named per partition at most; the counts are always complete."""

_ACCOUNTED: Final = (
    "SELECT DISTINCT toInt64(o) AS o FROM ("
    " SELECT kafka_offset AS o FROM events WHERE kafka_partition = {p:UInt16}"
    "  AND kafka_offset >= {lo:UInt64} AND kafka_offset < {end:UInt64}"
    " UNION ALL SELECT offset AS o FROM rejected_events WHERE topic = {topic:String}"
    "  AND partition = {p:UInt16} AND offset >= {lo:UInt64} AND offset < {end:UInt64}"
    " UNION ALL SELECT kafka_offset AS o FROM duplicate_copies"
    "  WHERE kafka_partition = {p:UInt16}"
    "  AND kafka_offset >= {lo:UInt64} AND kafka_offset < {end:UInt64})")


def kafka_extent(bootstrap: str, group: str, *, topic: str = topics.EVENTS,
                 since: dt.datetime | None = None, security: dict[str, str] | None = None
                 ) -> list[dict[str, int]]:
    """Per partition: the first offset to check (the retained low watermark, or the first
    offset at ``since``), the sink group's committed offset (the end, exclusive) and the
    high watermark. The group is only read: no member joins it, nothing is committed."""
    from confluent_kafka import Consumer, TopicPartition

    from agentledger.core.kafka import client_config

    consumer = Consumer(client_config(bootstrap, "consumer", group_id=group, extra=security))
    try:
        found = consumer.list_topics(topic, timeout=10).topics[topic]
        if found.error is not None:
            raise LookupError(f"{topic}: {found.error.str()}")
        parts = sorted(found.partitions)
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in parts], timeout=10)}
        starts: dict[int, int] = {}
        if since is not None:
            ms = int(since.timestamp() * 1000)
            starts = {tp.partition: tp.offset for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in parts], timeout=10)}
        extent = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            end = max(committed.get(p, -1), 0)
            start = low if since is None else starts.get(p, -1)
            start = max(low, start if start >= 0 else high)  # -1: nothing since then
            extent.append({"partition": p, "low": low, "start": start, "end": end,
                           "high": high})
        return extent
    finally:
        consumer.close()


def _partition(client: Client, topic: str, part: dict[str, int]) -> dict[str, Any]:
    """One partition's accounting: offsets expected, found, and the missing runs."""
    p, lo, end = part["partition"], part["start"], max(part["end"], part["start"])
    params = {"p": p, "lo": lo, "end": end, "topic": topic, "before": lo - 1}
    total = rows(client, f"SELECT count() AS n, max(o) AS last FROM ({_ACCOUNTED})", params)[0]
    gaps = rows(client, (
        "SELECT prev + 1 AS first, o - 1 AS last FROM ("
        " SELECT o, lagInFrame(o, 1, toInt64({before:Int64})) OVER "
        "  (ORDER BY o ASC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev"
        f" FROM ({_ACCOUNTED})) WHERE o > prev + 1 ORDER BY first LIMIT {MAX_GAPS}"),
        params) if total["n"] else []
    found = [{"first": int(g["first"]), "last": int(g["last"])} for g in gaps]
    tail_from = int(total["last"]) + 1 if total["n"] else lo
    if tail_from < end and len(found) < MAX_GAPS:
        found.append({"first": tail_from, "last": end - 1})
    return {**part, "expected": end - lo, "accounted": int(total["n"]),
            "missing": end - lo - int(total["n"]), "gaps": found}


def reconcile(client: Client, extent: list[dict[str, int]], *,
              topic: str = topics.EVENTS) -> dict[str, Any]:
    """The store's accounting of ``extent`` (:func:`kafka_extent`): ``ok`` when every
    offset landed or was rejected; else each missing run named by partition and offsets."""
    partitions = [_partition(client, topic, part) for part in extent]
    missing = sum(p["missing"] for p in partitions)
    return {"topic": topic, "ok": missing == 0, "expected": sum(p["expected"] for p in
                                                                   partitions),
            "accounted": sum(p["accounted"] for p in partitions), "missing": missing,
            "partitions": partitions}


def gap_lines(report: dict[str, Any], limit: int = 5) -> list[str]:
    """The first gaps as one line each: ``agent.events[1] offsets 40-41 missing``."""
    lines = []
    for part in report["partitions"]:
        for gap in part["gaps"]:
            span = (f"offset {gap['first']}" if gap["first"] == gap["last"]
                    else f"offsets {gap['first']}-{gap['last']}")
            why = gap.get("why", "neither in events nor in rejected_events")
            traces = f" (trace {', '.join(gap['traces'])})" if gap.get("traces") else ""
            lines.append(f"{report['topic']}[{part['partition']}] {span}: {why}{traces}")
    return lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])


def _messages(bootstrap: str, topic: str, part: dict[str, int],
              security: dict[str, str] | None) -> Iterator[tuple[int, bytes]]:
    """Every retained message of one partition in [start, end): (offset, value). Read by
    assignment, in no group: nothing is committed, no intake instance is disturbed."""
    from confluent_kafka import Consumer, TopicPartition

    from agentledger.core.kafka import client_config

    start, end = part["start"], part["end"]
    if start >= end:
        return
    consumer = Consumer(client_config(bootstrap, "consumer", group_id="agentledger-reconcile",
                                      extra={**(security or {}), "enable.auto.commit": "false",
                                             "enable.partition.eof": "true"}))
    try:
        consumer.assign([TopicPartition(topic, part["partition"], start)])
        quiet_polls = 0
        while quiet_polls < 50:  # 10 s of nothing before reaching ``end``: Kafka lost it
            batch = consumer.consume(500, timeout=0.2)
            if not batch:
                quiet_polls += 1
                continue
            quiet_polls = 0
            for msg in batch:
                if msg.error() is not None:
                    continue
                offset = msg.offset()
                if offset is None or offset >= end:
                    return
                yield offset, msg.value() or b""
                if offset == end - 1:
                    return
    finally:
        consumer.close()


def _traces_expected(value: bytes) -> set[str] | None:
    """The trace ids of one OTLP message that must have left a mark in the store, or None
    when it does not decode (it must then have been dead-lettered whole)."""
    from agentledger.intake.mapping import classify
    from agentledger.intake.spans import OWN_SCOPE, decode

    try:
        spans = decode(value, "auto")
    except Exception:  # the intake dead-letters whatever it cannot decode
        return None
    return {s.trace_id for s in spans
            if s.scope != OWN_SCOPE and (s.problem or classify(s) != "other")}


def _found_traces(client: Client, topic: str, traces: set[str]) -> set[str]:
    """Of ``traces``, those with an event or a refused span in the store."""
    found: set[str] = set()
    ordered = sorted(traces)
    for i in range(0, len(ordered), 5000):
        chunk = ordered[i:i + 5000]
        for row in rows(client, (
                "SELECT DISTINCT trace_id AS t FROM events WHERE trace_id IN {ids:Array(String)}"
                " UNION DISTINCT SELECT DISTINCT message_key AS t FROM rejected_events"
                " WHERE topic = {topic:String} AND message_key IN {ids:Array(String)}"),
                {"ids": chunk, "topic": topic}):
            found.add(str(row["t"]))
    return found


def reconcile_otlp(client: Client, bootstrap: str, extent: list[dict[str, int]], *,
                   topic: str, security: dict[str, str] | None = None) -> dict[str, Any]:
    """The store's accounting of the Kafka intake's committed ``otlp_spans`` messages
    (``extent`` from :func:`kafka_extent` with the intake's group): each message was
    dead-lettered whole, or each of its traces that should be a run has events or refused
    spans in the store. Missing messages are named with their trace ids."""
    partitions: list[dict[str, Any]] = []
    for part in extent:
        p = part["partition"]
        whole = {int(r["o"]) for r in rows(client, (
            "SELECT DISTINCT offset AS o FROM rejected_events WHERE topic = {topic:String}"
            " AND partition = {p:UInt16} AND offset >= {lo:UInt64} AND offset < {end:UInt64}"),
            {"topic": topic, "p": p, "lo": part["start"], "end": max(part["end"],
                                                                       part["start"])})}
        wanted: dict[int, set[str] | None] = {}
        for offset, value in _messages(bootstrap, topic, part, security):
            wanted[offset] = None if offset in whole else _traces_expected(value)
        traces = set().union(*(t for t in wanted.values() if t))
        found = _found_traces(client, topic, traces) if traces else set()
        gaps: list[dict[str, Any]] = []
        for offset in range(part["start"], part["end"]):
            if offset in whole:
                continue
            if offset not in wanted:
                gaps.append({"first": offset, "last": offset, "traces": [],
                             "why": "not retained by Kafka while reconciling"})
                continue
            expected = wanted[offset]
            lost = sorted(expected - found) if expected is not None else []
            if expected is None or lost:
                gaps.append({"first": offset, "last": offset, "traces": lost[:10],
                             "why": ("undecodable, yet not in rejected_events"
                                     if expected is None else
                                     "trace(s) neither in events nor in rejected_events")})
        missing = len(gaps)
        expected_n = max(part["end"] - part["start"], 0)
        partitions.append({**part, "expected": expected_n, "accounted": expected_n - missing,
                           "missing": missing, "gaps": gaps[:MAX_GAPS]})
    missing = sum(int(p["missing"]) for p in partitions)
    return {"topic": topic, "ok": missing == 0,
            "expected": sum(int(p["expected"]) for p in partitions),
            "accounted": sum(int(p["accounted"]) for p in partitions), "missing": missing,
            "partitions": partitions}
