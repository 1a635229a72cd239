"""Run every panel's SQL as Grafana would, and say whether its rows have the shape its
visualization needs. A dashboard nobody can run is a bug; this is how we find out without
a Grafana server. Used by the panel test and by ``agentledger report``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentledger.dashboards.macros import expand
from agentledger.dashboards.panels import DASHBOARDS, Dashboard
from agentledger.dashboards.results import PanelResult, is_number, is_time

# sql → (columns, types, rows); the caller decides how (ledger API, a client, ...)
Query = Callable[[str], tuple[list[str], list[str], list[list[Any]]]]


def run_panels(query: Query, *, variables: Mapping[str, str | Sequence[str]],
               time_from: dt.datetime, time_to: dt.datetime,
               dashboards: Sequence[Dashboard] = DASHBOARDS,
               ) -> list[tuple[Dashboard, list[PanelResult]]]:
    """Every panel's result; a failing query is recorded on its panel, not raised."""
    out = []
    for spec in dashboards:
        results = []
        for panel in spec.panels:
            sql = expand(panel.sql, time_from=time_from, time_to=time_to, variables=variables)
            try:
                columns, types, rows = query(sql)
            except Exception as exc:
                results.append(PanelResult(panel, [], [], [], error=str(exc).splitlines()[0]))
                continue
            results.append(PanelResult(panel, columns, types, rows))
        out.append((spec, results))
    return out


def shape_problem(result: PanelResult) -> str | None:
    """Why these rows cannot feed this visualization, or None if they can."""
    if result.error:
        return f"query failed: {result.error}"
    if not result.rows:
        return "no rows"
    types, kind = result.types, result.panel.kind
    times = [t for t in types if is_time(t)]
    numbers = [t for t in types if is_number(t)]
    labels = [t for t in types if not is_time(t) and not is_number(t)]
    if kind == "timeseries" and not (is_time(types[0]) and numbers):
        return f"a time series needs a time column first and a number: {types}"
    if kind in ("bar", "stat") and not numbers:
        return f"a {kind} panel needs a number: {types}"
    if kind == "bar" and not labels:
        return f"a bar chart needs a label column: {types}"
    if kind == "state" and not (times and len(labels) >= 2):
        return f"a state timeline needs time, scope and state: {types}"
    if kind == "logs" and not ({"timestamp", "body", "level"} <= set(result.columns)
                               and is_time(types[result.columns.index("timestamp")])):
        return f"a logs panel needs timestamp, body and level: {result.columns}"
    return None
