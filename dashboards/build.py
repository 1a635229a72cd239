"""The panels of ``panels.py`` as grafanalib dashboards, written as Grafana JSON.

``agentledger dashboards build [--out DIR]`` writes one JSON file per dashboard plus the
provisioning files (ClickHouse datasource, dashboard provider, the alert rules of
``alerts.py``) under DIR. The repo's
``dashboards/json`` is what docker-compose mounts; a test keeps it equal to this output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attr
from grafanalib import core
from grafanalib._gen import DashboardEncoder

from agentledger.dashboards.alerts import alerting_yaml
from agentledger.dashboards.panels import (
    DASHBOARDS,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    Dashboard,
    Panel,
)

HERE = Path(__file__).parent
ALERTING_FILE = Path("provisioning/alerting/agentledger.yaml")
DATASOURCE = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
HEIGHT = 8


@attr.s
class ClickHouseTarget:
    """A grafana-clickhouse-datasource query (its SQL editor's model)."""

    rawSql: str = attr.ib()
    format: int = attr.ib(default=1)
    queryType: str = attr.ib(default="table")
    refId: str = attr.ib(default="A")

    def to_json_data(self) -> dict[str, Any]:
        return {"datasource": DATASOURCE, "editorType": "sql", "rawSql": self.rawSql,
                "format": self.format, "queryType": self.queryType, "refId": self.refId}


def _links(panel: Panel) -> list[dict[str, Any]]:
    return [{"title": title, "url": url, "targetBlank": url.startswith("${api_url}")}
            for title, url in panel.links]


def _panel(panel: Panel, pos: core.GridPos) -> Any:
    common = {"title": panel.title, "description": panel.description, "dataSource": DATASOURCE,
              "targets": [ClickHouseTarget(panel.sql, panel.format, panel.query_type)],
              "gridPos": pos}
    links = _links(panel)
    field_links = {"defaults": {"links": links}} if links else None
    match panel.kind:
        case "timeseries":
            return core.TimeSeries(unit=panel.unit, **common)
        case "stat":
            return core.Stat(format=panel.unit, **common)
        case "bar":
            return core.BarChart(**common)
        case "state":
            return core.StateTimeline(**common)
        case "logs":
            return core.Logs(showTime=True, wrapLogMessages=True, enableLogDetails=True,
                             **common)
        case _:
            table = core.Table(**common)
            if field_links:
                table.extraJson = {"fieldConfig": field_links}
            return table


def _variable(name: str) -> core.Template:
    if name in ("tenant", "agent", "tool"):
        source = {"tenant": "SELECT DISTINCT tenant FROM events ORDER BY tenant",
                  "agent": "SELECT DISTINCT agent FROM events WHERE tenant IN "
                           "(${tenant:sqlstring}) ORDER BY agent",
                  "tool": "SELECT DISTINCT tool FROM events WHERE tool != '' AND tenant IN "
                          "(${tenant:sqlstring}) ORDER BY tool"}[name]
        if name == "tenant":
            return core.Template(name=name, label=name, query=source, dataSource=DATASOURCE,
                                 includeAll=True, multi=True, default="$__all", refresh=1)
        # one value, or empty for "any": the panels test `x = $v OR $v = ''`
        return core.Template(name=name, label=name, query=source, dataSource=DATASOURCE,
                             includeAll=True, allValue="", default="$__all", refresh=2)
    if name == "api_url":
        return core.Template(name=name, label="ledger API", type="textbox",
                             query="http://localhost:8080", default="http://localhost:8080")
    return core.Template(name=name, label=name.replace("_", " "), type="textbox", query="",
                         default="")


def dashboard(spec: Dashboard) -> core.Dashboard:
    panels, x, y = [], 0, 0
    for panel in spec.panels:
        if x + panel.width > 24:
            x, y = 0, y + HEIGHT
        panels.append(_panel(panel, core.GridPos(h=HEIGHT, w=panel.width, x=x, y=y)))
        x += panel.width
    return core.Dashboard(
        title=spec.title, uid=spec.uid, description=spec.description,
        tags=["agentledger"], timezone="utc", refresh="30s",
        time=core.Time("now-6h", "now"), panels=panels,
        templating=core.Templating([_variable(v) for v in spec.variables]),
        links=[core.DashboardLink(title="agentledger", type="dashboards",
                                  tags=["agentledger"], asDropdown=True)],
    ).auto_panel_ids()


def dashboard_json(spec: Dashboard) -> str:
    return json.dumps(dashboard(spec).to_json_data(), cls=DashboardEncoder, indent=2,
                      sort_keys=True) + "\n"


def generated() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{spec.uid}.json": dashboard_json(spec) for spec in DASHBOARDS}


def build(out: Path) -> list[Path]:
    """Write the dashboards to ``out/json`` and the provisioning to ``out/provisioning``."""
    written = []
    (out / "json").mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        path = out / "json" / name
        path.write_text(text)
        written.append(path)
    source = HERE / "provisioning"
    if out.resolve() != HERE.resolve():
        shutil.copytree(source, out / "provisioning", dirs_exist_ok=True)
    rules = out / ALERTING_FILE
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(alerting_yaml())
    written += sorted((out / "provisioning").rglob("*.yaml"))
    return written
