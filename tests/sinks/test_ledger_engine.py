"""The engine's half of the Merkle logs, against a real chdb store: the landing views
record exactly the leaves (and subtree roots) the pure-Python tree computes, fire for the
sink's named inserts only, and the read-back path refuses rows the sink did not insert."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from agentledger.core import merkle
from agentledger.core.settings import Settings
from agentledger.producers.emitter import Ledger
from agentledger.producers.simulator import Simulator
from agentledger.schemas.event_row import event_row
from agentledger.services import open_store
from agentledger.sinks.clickhouse import Batch, ClickHouseWriter
from agentledger.sinks.ledger_engine import (
    ReadBackMismatch,
    Span,
    insert_leaves,
    landed_roots,
    landing_comment,
    piece_roots,
    subtree_roots,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("ledger-engine")))
    client = open_store(settings)
    yield client, settings.clickhouse_database
    client.close()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    captured: list[dict[str, Any]] = []

    class Capture(Ledger):
        def send(self, event: dict[str, Any], traceparent: Any) -> None:
            captured.append(event)

    Simulator(lambda ident: Capture({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
                                    ident), seed=3).run(1)
    return captured[0]


def rows_at(template: dict[str, Any], partition: int, offsets: list[int]) -> list[list[Any]]:
    """One stored row per offset, each a distinct event (id, tenant, run and hash vary)."""
    rows = []
    for offset in offsets:
        event = dict(template, event_id=str(uuid.uuid4()), tenant=f"t{offset % 3}",
                     run_id=f"run-{partition}-{offset % 5}", hash=f"{offset:064x}")
        rows.append(event_row(event, orjson.dumps(event), partition, offset))
    return rows


def python_leaves(rows: list[list[Any]]) -> bytes:
    """The leaf hashes core.merkle computes for rows, in offset order."""
    return b"".join(merkle.leaf_hash(merkle.leaf_input(r[4], r[14], r[0], r[33]))
                    for r in sorted(rows, key=lambda r: r[-1]))


def leaf_records(client: Client, db: str, log: str) -> list[tuple]:
    return [tuple(r) for r in client.query(
        f"SELECT leaf_index, kafka_offset, event_id FROM {db}.ledger_leaves FINAL "
        "WHERE log_id = {log:String} ORDER BY leaf_index", parameters={"log": log}
    ).result_rows]


@pytest.mark.parametrize(("base", "count"), [(0, 1), (0, 64), (5, 100), (13, 3), (1021, 777)])
def test_landing_views_record_the_leaves_python_computes(
        store: tuple[Client, str], template: dict[str, Any], base: int, count: int) -> None:
    client, db = store
    first = 1_000_000 + base * 10_000 + count * 3  # apart from every other case
    spans, rows = [], []
    for partition in (1, 2):
        log = f"test.engine/{base}/{count}/{partition}"
        spans.append(Span(partition, log, first, first + count - 1, base, count))
        rows += rows_at(template, partition, list(range(first, first + count)))
    batch = uuid.uuid4().hex
    comment = landing_comment(batch, spans)
    assert comment is not None
    ClickHouseWriter(client, db).write(Batch(events=rows), {"log_comment": comment})

    roots = landed_roots(client, db, batch, spans)
    assert roots is not None
    for span in spans:
        mine = [r for r in rows if r[-2] == span.partition]
        assert roots[span.partition] == piece_roots(span, python_leaves(mine))
        records = leaf_records(client, db, span.log_id)
        assert records == [(base + i, first + i, str(r[0])) for i, r in enumerate(mine)]
    # the read-back path agrees with the views
    assert subtree_roots(client, db, spans) == roots


def test_other_inserts_add_nothing_and_gaps_are_numbered_by_rank(
        store: tuple[Client, str], template: dict[str, Any]) -> None:
    client, db = store
    before = client.query(f"SELECT count() FROM {db}.ledger_leaves").result_rows[0][0]
    offsets = [50_000, 50_001, 50_003, 50_007]  # 50_002 was rejected, ... a gap
    rows = rows_at(template, 7, offsets)
    ClickHouseWriter(client, db).write(Batch(events=rows))  # no comment: no leaves
    assert client.query(f"SELECT count() FROM {db}.ledger_leaves").result_rows[0][0] == before

    span = Span(7, "test.engine/gaps", offsets[0], offsets[-1], 40, len(offsets))
    assert landing_comment("b", [span]) is None  # the views cannot number a gap
    assert subtree_roots(client, db, [span])[7] == piece_roots(span, python_leaves(rows))
    insert_leaves(client, db, [span])
    assert leaf_records(client, db, span.log_id) == [
        (40 + i, offset, str(r[0]))
        for i, (offset, r) in enumerate(zip(offsets, rows, strict=True))]


def test_read_back_takes_identical_copies_and_refuses_other_rows(
        store: tuple[Client, str], template: dict[str, Any]) -> None:
    client, db = store
    offsets = list(range(60_000, 60_010))
    rows = rows_at(template, 8, offsets)
    writer = ClickHouseWriter(client, db)
    writer.write(Batch(events=[list(r) for r in rows]))
    writer.write(Batch(events=[list(r) for r in rows]))  # a retried insert: identical copies
    span = Span(8, "test.engine/copies", offsets[0], offsets[-1], 0, len(offsets))
    assert subtree_roots(client, db, [span])[8] == piece_roots(span, python_leaves(rows))
    assert span.careful

    forged = rows_at(template, 8, [60_004])  # another event at an offset of the batch
    writer.write(Batch(events=forged))
    with pytest.raises(ReadBackMismatch, match="11 distinct rows at 10 offsets"):
        subtree_roots(client, db, [Span(8, "test.engine/copies", offsets[0], offsets[-1], 0,
                                        len(offsets))])


def test_landing_rows_that_do_not_tile_a_span_are_not_used(
        store: tuple[Client, str], template: dict[str, Any]) -> None:
    client, db = store
    span = Span(9, "test.engine/split", 70_000, 70_019, 0, 20)
    batch = uuid.uuid4().hex
    comment = landing_comment(batch, [span])
    assert comment is not None
    rows = rows_at(template, 9, list(range(70_000, 70_020)))
    writer = ClickHouseWriter(client, db)
    writer.write(Batch(events=rows[:12]), {"log_comment": comment})
    assert landed_roots(client, db, batch, [span]) is None  # only part of the span landed
    writer.write(Batch(events=rows[12:]), {"log_comment": comment})
    # two records that tile the span: still not one whole record, so read back instead
    assert landed_roots(client, db, batch, [span]) is None
    assert subtree_roots(client, db, [span])[9] == piece_roots(span, python_leaves(rows))
