"""The provisioned Grafana alert rules: linked to panels and runbooks, and evaluated against
the shared store (``filled``, tests/dashboards/conftest.py) before, during and after a
tool outage."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agentledger.dashboards.alerts import RULES, evaluate
from agentledger.dashboards.build import ALERTING_FILE
from agentledger.dashboards.panels import DASHBOARDS, DATASOURCE_UID

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _provisioned_rules() -> dict[str, dict[str, Any]]:
    import yaml

    doc = yaml.safe_load((REPO / "dashboards" / ALERTING_FILE).read_text())
    assert doc["apiVersion"] == 1 and len(doc["groups"]) == 1
    return {rule["uid"]: rule for rule in doc["groups"][0]["rules"]}


def test_alert_rules_are_provisioned_linked_and_documented():
    rules = _provisioned_rules()
    assert set(rules) == {r.uid for r in RULES} and len(rules) == 7
    readme = (REPO / "README.md").read_text()
    boards = {spec.uid: json.loads((REPO / "dashboards" / "json" / f"{spec.uid}.json")
                                   .read_text()) for spec in DASHBOARDS}
    for uid, rule in rules.items():
        refs = {d["refId"]: d for d in rule["data"]}
        assert refs["A"]["datasourceUid"] == DATASOURCE_UID
        assert refs["A"]["model"]["rawSql"].startswith("SELECT")
        assert refs["B"]["model"]["type"] == "reduce" and refs["B"]["model"]["expression"] == "A"
        assert refs["C"]["model"]["type"] == "threshold" and rule["condition"] == "C"
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"]
        assert "$" not in json.dumps(rule["labels"]), "labels are env-interpolated"
        notes = rule["annotations"]
        anchor = notes["runbook_url"].split("#")[1]
        assert f'<a id="{anchor}"></a>' in readme, f"{uid}: no runbook section {anchor}"
        panel = [p for p in boards[notes["__dashboardUid__"]]["panels"]
                 if str(p["id"]) == notes["__panelId__"]]
        assert panel, f"{uid}: links to a missing panel"


def test_every_alert_rule_runs_and_the_outage_fires_the_breaker_and_safe_mode_rules(
        filled: dict[str, Any]):
    client = filled["client"]

    def query(sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
        result = client.query(sql, settings={"readonly": 2})
        return (list(result.column_names), [t.name for t in result.column_types],
                [list(r) for r in result.result_rows])

    def firing(uid: str, at: dt.datetime) -> list[dict[str, str]]:
        return [i.labels for i in evaluate(rules[uid], query, at) if i.firing]

    rules = _provisioned_rules()
    opened = client.query("SELECT min(ts) FROM control_signals WHERE kind = 'breaker' "
                          "AND state = 'OPEN'").result_rows[0][0].replace(tzinfo=dt.UTC)
    beat = client.query("SELECT max(ts) FROM heartbeats").result_rows[0][0].replace(
        tzinfo=dt.UTC)
    during, after = opened + dt.timedelta(seconds=20), filled["to"] + dt.timedelta(minutes=20)
    for rule in rules.values():  # every query runs, before, during and after
        for at in (during, after, beat + dt.timedelta(seconds=5)):
            evaluate(rule, query, at)
    reasons = {(scope, state): reason for scope, state, reason in client.query(
        "SELECT scope, state, reason FROM control_signals FINAL WHERE ts <= {t:DateTime64(6, "
        "'UTC')} ORDER BY version", parameters={"t": during}).result_rows}
    breakers = firing("agentledger-breaker-open", during)
    assert [b["scope"] for b in breakers] == ["acme/*/salesforce"], breakers
    assert breakers[0]["reason"] == reasons[("acme/*/salesforce", "OPEN")] != ""
    agents = {a["agent"]: a["reason"] for a in firing("agentledger-agent-read-only", during)}
    assert agents.get("acme/crm-agent") == reasons[("acme/crm-agent", "read_only")] != "", \
        agents
    # healthy: long after the outage recovered, and a tenant that never had one
    assert not firing("agentledger-breaker-open", after)
    assert not firing("agentledger-agent-read-only", after)
    for uid in ("agentledger-breaker-open", "agentledger-agent-read-only"):
        for at in (during, after):
            assert all(i.labels["tenant"] == "acme" for i in evaluate(rules[uid], query, at))
    # the pipeline rule: quiet right after a heartbeat, firing once the test stopped them
    assert not firing("agentledger-pipeline-stalled", beat + dt.timedelta(seconds=5))
    assert {f["component"] for f in firing("agentledger-pipeline-stalled", after)} == {
        "sink", "streams"}
    assert not firing("agentledger-dlq-rate", during)  # 3 rejects are not a flood
    assert not firing("agentledger-cost-per-success", during)
