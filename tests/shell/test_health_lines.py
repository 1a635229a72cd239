"""`agentledger health`'s lines from heartbeat rows (plain rows; the end-to-end health
tests with a real stack are in tests/shell/test_supervisor.py)."""

from __future__ import annotations

from agentledger.queries.pipeline import HealthLimits, problems


def _beat(component: str, details: dict, *, age_s: float = 1.0, status: str = "ok") -> dict:
    return {"component": component, "instance": f"{component}-1", "status": status,
            "age_s": age_s, "lag_events": 0, "details": details}


def test_offsets_a_consumer_never_got_are_named_for_sink_and_worker():
    healthy = [_beat("sink", {"gaps_refetched": 3, "gaps_accepted": 0}),
               _beat("streams", {"lag_s": 0.2, "offset_gaps": 0})]
    assert problems(healthy, 0.0, HealthLimits()) == [], \
        "a gap fetched again and landed is not a problem"
    lost = [_beat("sink", {"gaps_refetched": 4, "gaps_accepted": 9}),
            _beat("streams", {"lag_s": 0.2, "offset_gaps": 2})]
    said = problems(lost, 0.0, HealthLimits())
    assert any(line.startswith("sink: 9 offsets never delivered") for line in said), said
    assert any("2 records of agent.events skipped" in line for line in said), said
