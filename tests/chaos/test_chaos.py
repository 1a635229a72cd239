"""A reduced chaos run in ``make test``: the full one is ``python -m tests.chaos``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentledger.core.dead_letters import Rejection
from agentledger.sinks.decode import decode, decode_metric, decode_signal
from tests.chaos.badinput import KINDS, bad_messages
from tests.chaos.driver import Chaos, ChaosPlan


@given(st.binary(max_size=4096) | st.text(max_size=2048).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_decoding_never_raises_on_any_bytes(value: bytes):
    for decoder in (decode, decode_metric, decode_signal):
        result = decoder(value, 256 * 1024)
        assert result is None or not isinstance(result, BaseException)


def test_every_hostile_kind_is_rejected_by_the_decoder():
    seen = set()
    for kind, _key, value in bad_messages(4 * len(KINDS), seed=3):
        assert isinstance(decode(value, 256 * 1024), Rejection), kind
        seen.add(kind)
    assert seen == set(KINDS)


@pytest.mark.integration
def test_kills_pauses_and_bad_input_lose_nothing_and_double_nothing(tmp_path):
    plan = ChaosPlan(events=20_000, events_per_s=1_000, sink_kills=3, streams_kills=3,
                     pauses=2, pause_s=3.0, bad=200, seed=7)
    report = Chaos(plan, tmp_path).run()
    assert report["faults_injected"] == 8
    assert report["events_lost"] == 0, report
    assert report["duplicates_visible"] == 0, report
    assert report["events_landed"] == report["events_produced"], report
    assert report["events_by_type_total"] == report["events_produced"], report
    assert report["run_summaries"] == report["runs"], report
    assert report["bad_accounted"] == report["bad_messages"], report
