"""Dashboards as code: valid Grafana JSON, every panel's SQL runs on a store filled by the
real pipeline (simulator, the tool-outage scenario through a real stream worker, garbage
for the DLQ), and the HTML report draws every chart in headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentledger.core import discovery
from agentledger.core.settings import Settings
from agentledger.dashboards.build import ALERTING_FILE, dashboard, generated
from agentledger.dashboards.check import run_panels, shape_problem
from agentledger.dashboards.macros import expand, sqlstring
from agentledger.dashboards.panels import DASHBOARDS, DATASOURCE_TYPE, DATASOURCE_UID
from agentledger.services import open_store, start_api
from tests.cdp import Browser
from tests.conftest import CLI
from tests.report_checks import check_report_page

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


# -- the JSON ------------------------------------------------------------------------------


def test_build_writes_four_valid_dashboards_every_panel_on_clickhouse(tmp_path: Path):
    done = subprocess.run([*CLI, "dashboards", "build", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "json").glob("*.json"))
    assert len(files) == 4
    titles = set()
    for path in files:
        board = json.loads(path.read_text())
        # the schema Grafana needs to load a dashboard
        assert {"uid", "title", "panels", "templating", "time", "schemaVersion"} <= set(board)
        assert isinstance(board["schemaVersion"], int) and board["uid"] == path.stem
        titles.add(board["title"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), "panel ids unique"
        for panel in board["panels"]:
            assert panel["type"] in {"timeseries", "table", "stat", "barchart",
                                     "state-timeline", "logs"}, panel["type"]
            pos = panel["gridPos"]
            assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
                assert target["editorType"] == "sql" and target["rawSql"].startswith("SELECT")
                assert target["queryType"] in {"table", "timeSeries", "logs"}
                assert target["format"] in {0, 1, 2}
        for variable in board["templating"]["list"]:
            assert variable["name"] and variable["type"] in {"query", "textbox"}
    assert titles == {"Agent operations", "Tool reliability", "Unit economics",
                      "Incident search"}
    # grafanalib's own validation ran when the objects were built; the committed JSON that
    # docker-compose mounts is exactly this output
    committed = {p.name: p.read_text() for p in (REPO / "dashboards" / "json").glob("*.json")}
    assert committed == generated(), "run `agentledger dashboards build` and commit"
    assert (tmp_path / "provisioning" / "datasources" / "clickhouse.yaml").exists()
    rules = tmp_path / ALERTING_FILE
    assert rules.read_text() == (REPO / "dashboards" / ALERTING_FILE).read_text(), \
        "run `agentledger dashboards build` and commit the alert rules"
    # panels link to each other by trace id
    economics = json.loads((tmp_path / "json" / "agentledger-economics.json").read_text())
    links = [link["url"] for p in economics["panels"]
             for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
    assert any("var-trace_id=${__data.fields.trace_id}" in url for url in links)
    # incident search opens runs in the console (a page), never the JSON routes
    incident = json.loads((tmp_path / "json" / "agentledger-incident.json").read_text())
    links = [link["url"] for p in incident["panels"]
             for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
    assert "${api_url}/console/runs/${__data.fields.run_id}" in links
    assert not [url for url in links if "/v1/" in url], links


def test_macros_expand_like_the_plugin():
    t0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
    t1 = t0 + dt.timedelta(hours=1)
    sql = expand("SELECT $__timeInterval(ts) AS t FROM e WHERE $__timeFilter(ts) AND "
                 "tenant IN (${tenant:sqlstring}) AND x = $__interval_s",
                 time_from=t0, time_to=t1, variables={"tenant": ["acme", "o'hare"]},
                 max_points=60)
    assert "toStartOfInterval(toDateTime(ts), INTERVAL 60 second)" in sql
    assert f"ts >= toDateTime({int(t0.timestamp())}) AND ts <= toDateTime(" in sql
    assert "tenant IN ('acme','o''hare')" in sql and "x = 60" in sql
    assert sqlstring(["' OR 1=1 --"]) == "''' OR 1=1 --'"
    assert all(dashboard(spec).to_json_data()["panels"] for spec in DASHBOARDS)


# -- every panel against a real store (``filled``: tests/dashboards/conftest.py) ----------


def test_every_panel_runs_and_returns_rows_of_its_shape(filled: dict[str, Any]):
    client = filled["client"]

    def query(sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
        result = client.query(sql, settings={"readonly": 2})
        return (list(result.column_names), [t.name for t in result.column_types],
                [list(r) for r in result.result_rows])

    variables = {"tenant": ["acme", "globex"], "agent": "", "tool": "", "trace_id": "",
                 "run_id": filled["run_id"], "api_url": "http://localhost:8080"}
    results = run_panels(query, variables=variables, time_from=filled["from"],
                         time_to=filled["to"])
    problems = {f"{spec.title} / {r.panel.title}": shape_problem(r)
                for spec, rs in results for r in rs if shape_problem(r)}
    assert not problems, problems
    assert sum(len(rs) for _, rs in results) >= 20
    by_title = {r.panel.title: r for _, rs in results for r in rs}
    # the tool-outage is visible where ops would look for it
    states = {row[2] for row in by_title["Circuit breakers"].rows}
    assert {"OPEN", "HALF_OPEN", "CLOSED"} <= states
    errors = by_title["Error rate per tool"]
    assert errors.rows[0][0] == "salesforce", errors.rows
    assert by_title["Run timeline"].rows and all(
        row[1] == filled["run_id"] for row in by_title["Run timeline"].rows)
    # a variable is a quoted string: a hostile value matches nothing and breaks nothing
    hostile = {**variables, "tenant": ["' OR 1=1 --"], "agent": "x' OR '1'='1"}
    for _, rs in run_panels(query, variables=hostile, time_from=filled["from"],
                            time_to=filled["to"]):
        for r in rs:
            assert r.error is None, (r.panel.title, r.error)
            if "tenant IN" in r.panel.sql:
                assert not r.rows, r.panel.title


# -- the HTML report in headless Chromium --------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name) or name
    install = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"headless Chromium is not installed and could not be installed "
                    f"(apt-get exit {install.returncode}: {install.stderr.strip()[-200:]})")
    return shutil.which("chromium") or "chromium"


@pytest.fixture(scope="module")
def report(filled: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`agentledger report` over the filled store, through the API like `up` serves it."""
    settings: Settings = filled["settings"]
    api = start_api(settings, open_store(settings))  # the store's owner, like `up`
    discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
    try:
        out = tmp_path_factory.mktemp("report") / "report.html"
        env = {"AGENTLEDGER_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [*CLI, "report", "-o", str(out), "--since", filled["from"].isoformat(),
             "--until", filled["to"].isoformat()], env=env, capture_output=True, text=True,
            timeout=120)
    finally:
        discovery.withdraw(settings, discovery.STORE_FILE)
        api.stop()
    assert done.returncode == 0, done.stderr
    return {"path": out, "stderr": done.stderr}


def test_report_renders_every_chart_in_headless_chromium(report: dict[str, Any]):
    browser = _chromium()
    out: Path = report["path"]
    page = out.read_text()
    charts = page.count('<div class="chart"')
    panels = sum(len(spec.panels) for spec in DASHBOARDS)
    assert charts == panels, f"{charts} charts for {panels} panels: {report['stderr']}"
    assert "<table" not in page, "pictures, not tables of numbers"
    screenshot = REPO / ".agentledger" / "report.png"
    screenshot.parent.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    body = re.search(r'<body[^>]*data-charts="(\d+)"[^>]*data-rendered="(\d+)"', dom.stdout)
    assert body, "the page's check script did not run"
    assert int(body.group(1)) == panels and int(body.group(2)) == panels, body.groups()
    shot = subprocess.run([browser, *flags, "--window-size=1280,4000",
                           f"--screenshot={screenshot}", out.as_uri()], capture_output=True,
                          text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.stat().st_size > 20_000, shot.stderr[-500:]


def test_report_draws_offline_every_chart_with_units_and_utc_time_axes(
        report: dict[str, Any], tmp_path: Path):
    """Each section's screenshot has ink inside every chart's box; no console error; no
    request leaves the page (a proxy on a closed port would fail it anyway); time axes
    carry UTC clock labels; value axes carry their units."""
    with Browser(_chromium(), tmp_path / "profile") as page:
        seen = check_report_page(page, report["path"], REPO / ".agentledger" / "report")
    panels = sum(len(spec.panels) for spec in DASHBOARDS)
    assert seen["charts"] == panels and seen["sections"] == len(DASHBOARDS), seen
    assert seen["time_axes"] >= 12, seen



# -- agentledger watch ---------------------------------------------------------------------


def test_watch_once_json_lists_the_breaker_and_the_degraded_agent_with_reasons(
        filled: dict[str, Any]):
    from rich.console import Console

    from agentledger.auth import KeyRing, entry_for, new_key
    from agentledger.cli.watch import view

    settings: Settings = filled["settings"]
    stored = {(scope, state): reason for scope, state, reason in filled["client"].query(
        "SELECT scope, state, reason FROM control_signals FINAL ORDER BY version").result_rows}
    env = {"AGENTLEDGER_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin"}

    def watch(*flags: str) -> dict[str, Any]:
        done = subprocess.run([*CLI, "watch", "--once", "--json", "--recent", "120", *flags],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    api = start_api(settings, open_store(settings))  # found like a running `up`
    discovery.publish(settings, discovery.STORE_FILE, {"api_url": api.url})
    try:
        snap = watch()
    finally:
        discovery.withdraw(settings, discovery.STORE_FILE)
        api.stop()
    breakers = {b["scope"]: b for b in snap["breakers"]}
    assert breakers["acme/*/salesforce"]["reason"] and breakers["acme/*/salesforce"][
        "age_s"] >= 0
    changes = {(t["scope"], t["state"]): t["reason"] for t in reversed(snap["transitions"])}
    assert changes[("acme/*/salesforce", "OPEN")] == stored[("acme/*/salesforce", "OPEN")]
    assert changes[("acme/crm-agent", "read_only")] == stored[("acme/crm-agent", "read_only")]
    assert "acme/crm-agent" in {s["scope"] for s in snap["safe_modes"]}
    assert snap["sink"]["heartbeat_age_s"] >= 0 and snap["control_loop"]["status"]
    assert snap["dlq_per_minute"] >= 0 and snap["throughput"]["newest_event"]
    costs = [r["cost_usd"] for r in snap["most_expensive_runs"]]
    assert costs and costs == sorted(costs, reverse=True)
    assert snap["cost_per_success"]["usd_per_success"] > 0
    screen = Console(record=True, width=200)  # the live view draws the same snapshot
    screen.print(view(snap, api.url))
    drawn = screen.export_text()
    assert "acme/*/salesforce" in drawn and stored[("acme/crm-agent", "read_only")] in drawn
    # --api-url/--api-key, and a key that reads only globex sees neither acme's breaker
    # nor the tenant-less pipeline figures
    operator, globex = new_key(), new_key()
    api = start_api(settings, open_store(settings), keys=KeyRing(
        [entry_for("ops", operator, ["*"]), entry_for("globex", globex, ["globex"])]),
        host="127.0.0.1", port=0)
    try:
        assert watch("--api-url", api.url, "--api-key", operator)["breakers"]
        theirs = watch("--api-url", api.url, "--api-key", globex)
    finally:
        api.stop()
    assert theirs["breakers"] == [] and theirs["transitions"] == [] and "sink" not in theirs
    assert {r["tenant"] for r in theirs["most_expensive_runs"]} <= {"globex"}
