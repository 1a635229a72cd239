"""A panel's rows as a Plotly figure (a plain dict, ready for ``Plotly.newPlot``).

Time series are lines on a UTC date axis; bar panels and the tables that name a
``picture`` are horizontal bars; transitions (breakers, safe mode) are state timelines, one
lane per scope, coloured by state; the event log is a stacked histogram by level; other
tables (the run timeline) stay tables. Axes carry the panel's unit, and tooltips give exact
values, formatted as money, percentages, milliseconds or rates.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from agentledger.dashboards.results import PanelResult, is_number, is_time, utc, utc_text

PALETTE = ("#3274d9", "#e0752d", "#56a64b", "#a352cc", "#f2cc0c", "#e02f44", "#8ab8ff",
           "#ff9830", "#73bf69", "#ca95e5")
STATE_COLORS = {"CLOSED": "#56a64b", "OPEN": "#e02f44", "HALF_OPEN": "#f2cc0c",
                "normal": "#56a64b", "read_only": "#e0752d", "halted": "#e02f44",
                "cleared": "#8ab8ff"}
LEVEL_COLORS = {"error": "#e02f44", "warning": "#ff9830", "info": "#3274d9"}
TIME_AXIS = {"type": "date", "title": {"text": "time (UTC)"}, "hoverformat": "%H:%M:%S UTC",
             "showgrid": True}


@dataclass(frozen=True)
class Format:
    """d3 formats of one unit: on axis ticks, and exact in tooltips."""

    tick: str
    exact: str
    suffix: str = ""


FORMATS = {
    "percentunit": Format(".0%", ".2%"),
    "currencyUSD": Format("$,.3~f", "$,.6f"),
    "ms": Format(",~g", ",.1f", " ms"),
    "ops": Format(",.3~f", ",.3f", "/s"),
    "short": Format(",~g", ",~g"),
}


@dataclass(frozen=True)
class Frame:
    """What a figure needs besides the rows: the range shown and the bucket width."""

    time_from: dt.datetime
    time_to: dt.datetime
    interval_s: int


def _axis_title(result: PanelResult, interval_s: int) -> str:
    """The panel's axis title; a per-minute table's buckets are never under a minute."""
    if "$__timeInterval(minute)" in result.panel.sql:
        interval_s = max(60, -(-interval_s // 60) * 60)
    text = result.panel.axis or result.panel.unit
    return text.replace("{interval}", _duration(interval_s))


def _time_axis(frame: Frame) -> dict[str, Any]:
    """The report's whole range, so a lone point or a late transition keeps its context."""
    return {**TIME_AXIS, "range": [utc_text(frame.time_from), utc_text(frame.time_to)]}


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _fmt(result: PanelResult) -> Format:
    return FORMATS.get(result.panel.unit, FORMATS["short"])


def _layout(height: int = 300, **extra: Any) -> dict[str, Any]:
    return {"template": "plotly_white", "height": height, "autosize": True,
            "margin": {"l": 70, "r": 20, "t": 30, "b": 50}, "font": {"size": 11},
            "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"}} | extra


def time_series(result: PanelResult, frame: Frame) -> go.Figure:
    types = result.types
    time_i = next(i for i, t in enumerate(types) if is_time(t))
    label_i = next((i for i, t in enumerate(types) if i != time_i and not is_number(t)), None)
    value_i = next(i for i, t in enumerate(types) if i != time_i and is_number(t))
    series: dict[str, list[tuple[str, float | None]]] = {}
    for row in result.rows:
        name = str(row[label_i]) if label_i is not None else result.columns[value_i]
        value = row[value_i]
        series.setdefault(name, []).append(
            (utc_text(row[time_i]), None if value is None else float(value)))
    fmt = _fmt(result)
    fig = go.Figure()
    for n, (name, points) in enumerate(sorted(series.items())):
        points.sort()
        fig.add_trace(go.Scatter(
            x=[x for x, _ in points], y=[y for _, y in points], name=name,
            mode="lines+markers" if len(points) <= 40 else "lines",
            line={"color": PALETTE[n % len(PALETTE)], "width": 2},
            marker={"size": 9 if len(points) <= 3 else 5},
            hovertemplate=f"{name}: %{{y:{fmt.exact}}}{fmt.suffix}<extra></extra>"))
    fig.update_layout(**_layout(hovermode="x unified", showlegend=label_i is not None),
                      xaxis=_time_axis(frame),
                      yaxis={"title": {"text": _axis_title(result, frame.interval_s)},
                             "tickformat": fmt.tick, "ticksuffix": fmt.suffix,
                             "rangemode": "tozero"})
    return fig


def bars(result: PanelResult, label: str, value: str, frame: Frame) -> go.Figure:
    """Horizontal bars, first row on top; long labels shortened, kept whole in the tooltip."""
    li, vi = result.columns.index(label), result.columns.index(value)
    rows = [r for r in result.rows if r[vi] is not None][:20]
    names = [str(r[li]) for r in rows]
    short = [n if len(n) <= 28 else n[:13] + "…" + n[-8:] for n in names]
    fmt = _fmt(result)
    fig = go.Figure(go.Bar(
        orientation="h", y=short, x=[float(r[vi]) for r in rows], customdata=names,
        marker={"color": [PALETTE[n % len(PALETTE)] for n in range(len(rows))]},
        texttemplate=f"%{{x:{fmt.exact}}}{fmt.suffix}", textposition="auto",
        hovertemplate=f"%{{customdata}}<br>{value}: %{{x:{fmt.exact}}}{fmt.suffix}"
                      "<extra></extra>"))
    fig.update_layout(**_layout(height=max(220, 26 * len(rows) + 90)),
                      yaxis={"autorange": "reversed", "type": "category"},
                      xaxis={"title": {"text": _axis_title(result, frame.interval_s)},
                             "tickformat": fmt.tick, "ticksuffix": fmt.suffix})
    return fig


def state_timeline(result: PanelResult, frame: Frame) -> go.Figure:
    """One lane per scope; each state lasts until the next transition (or the range's end)."""
    cols, types = result.columns, result.types
    time_i = next(i for i, t in enumerate(types) if is_time(t))
    labels = [i for i, t in enumerate(types) if not is_time(t)]
    scope_i = cols.index("scope") if "scope" in cols else labels[0]
    state_i = cols.index("state") if "state" in cols else labels[1]
    reason_i = cols.index("reason") if "reason" in cols else None
    lanes: dict[str, list[tuple[dt.datetime, str, str]]] = {}
    for row in result.rows:
        reason = str(row[reason_i] or "") if reason_i is not None else ""
        lanes.setdefault(str(row[scope_i]), []).append(
            (utc(row[time_i]), str(row[state_i]), reason))
    segments: dict[str, list[tuple[str, dt.datetime, dt.datetime, str]]] = {}
    for scope, changes in lanes.items():
        changes.sort(key=lambda c: c[0])
        for k, (start, state, reason) in enumerate(changes):
            end = changes[k + 1][0] if k + 1 < len(changes) else max(frame.time_to, start)
            segments.setdefault(state, []).append((scope, start, end, reason))
    fig = go.Figure()
    for n, (state, parts) in enumerate(sorted(segments.items())):
        fig.add_trace(go.Bar(
            orientation="h", name=state, y=[p[0] for p in parts],
            base=[utc_text(p[1]) for p in parts],
            x=[max((p[2] - p[1]).total_seconds() * 1000, 500.0) for p in parts],
            customdata=[[f"{p[1]:%H:%M:%S}", f"{p[2]:%H:%M:%S}", p[3] or "-"] for p in parts],
            marker={"color": STATE_COLORS.get(state, PALETTE[n % len(PALETTE)])},
            hovertemplate=f"%{{y}}: <b>{state}</b><br>%{{customdata[0]}} to "
                          "%{customdata[1]} UTC<br>%{customdata[2]}<extra></extra>"))
    fig.update_layout(**_layout(height=max(200, 40 * len(lanes) + 110), barmode="overlay"),
                      xaxis=_time_axis(frame),
                      yaxis={"type": "category", "autorange": "reversed"})
    return fig


def log_histogram(result: PanelResult, frame: Frame) -> go.Figure:
    """Events per bucket and level, over the span the log holds (its latest rows)."""
    times = result.columns.index("timestamp")
    levels = result.columns.index("level")
    stamps = [utc(r[times]) for r in result.rows]
    span = (max(stamps) - min(stamps)).total_seconds()
    bucket = next((b for b in (1, 2, 5, 10, 15, 30, 60, 300, 600, 1800, 3600)
                   if span / b <= 40), 3600 * 6)
    fig = go.Figure()
    by_level: dict[str, list[str]] = {}
    for row in result.rows:
        by_level.setdefault(str(row[levels]), []).append(utc_text(row[times]))
    for level in sorted(by_level, key=lambda lv: list(LEVEL_COLORS).index(lv)
                        if lv in LEVEL_COLORS else 9):
        fig.add_trace(go.Histogram(
            x=by_level[level], name=level, xbins={"size": bucket * 1000},
            marker={"color": LEVEL_COLORS.get(level, "#8ab8ff")},
            hovertemplate=f"{level}: %{{y:,}} events<extra></extra>"))
    fig.update_layout(**_layout(barmode="stack", hovermode="x unified"), xaxis=TIME_AXIS,
                      yaxis={"title": {"text": f"events per {_duration(bucket)}"},
                             "tickformat": ",~g"})
    return fig


def _cell(column: str, value: Any) -> str:
    if value is None or value == "" or (value == 0 and column.endswith(("_usd", "_ms"))):
        return ""
    if column in ("ts", "time", "timestamp", "finished_at"):
        return f"{utc(value):%H:%M:%S.%f}"[:-3]
    if column.endswith("_usd") and isinstance(value, int | float):
        return f"${value:,.6f}"
    if column.endswith("_ms") and isinstance(value, int | float):
        return f"{value:,.1f} ms"
    return str(value)


def table(result: PanelResult) -> go.Figure:
    """The rows as a table. Columns empty on every row are left out; long ids that are the
    same on every row (the run, the trace) are said once above the table."""
    columns, rows = result.columns, result.rows
    same = [i for i, c in enumerate(columns) if len(rows) > 1 and len({str(r[i]) for r in rows})
            == 1 and len(str(rows[0][i])) > 16]
    keep = [i for i, c in enumerate(columns) if i not in same and c != "span_id"
            and (any(r[i] not in (None, "", 0) for r in rows) or c in ("seq", "ts"))]
    header = [columns[i] + (" (UTC)" if columns[i] == "ts" else "") for i in keep]
    cells = [[_cell(columns[i], r[i]) for r in rows] for i in keep]
    widths = [max([len(header[k])] + [len(v) for v in cells[k]]) for k in range(len(keep))]
    note = " · ".join(f"{columns[i]} {rows[0][i]}" for i in same)
    fig = go.Figure(go.Table(
        columnwidth=widths,
        header={"values": header, "fill": {"color": "#e8eef8"}, "align": "left",
                "font": {"size": 11}},
        cells={"values": cells, "align": "left", "font": {"size": 10}, "height": 22,
               "fill": {"color": [["#ffffff", "#f6f6f6"] * (len(rows) // 2 + 1)]}}))
    fig.update_layout(**_layout(height=min(640, 22 * len(rows) + 90),
                                margin={"l": 5, "r": 5, "t": 30 if note else 5, "b": 5}),
                      title={"text": note, "font": {"size": 11}, "x": 0.01, "y": 0.98})
    return fig


def figure(result: PanelResult, frame: Frame) -> go.Figure:
    """The picture of one panel's rows (assumes rows)."""
    panel, types = result.panel, result.types
    kind = panel.report_as or panel.kind
    if kind == "timeseries":
        return time_series(result, frame)
    if kind == "state":
        return state_timeline(result, frame)
    if kind == "logs":
        return log_histogram(result, frame)
    if panel.picture and set(panel.picture) <= set(result.columns):
        return bars(result, *panel.picture, frame)
    label_i = next((i for i, t in enumerate(types) if not is_number(t) and not is_time(t)), 0)
    value_i = next((i for i, t in enumerate(types) if is_number(t)), None)
    if kind in ("bar", "stat") and value_i is not None:
        return bars(result, result.columns[label_i], result.columns[value_i], frame)
    return table(result)


def time_extent(result: PanelResult) -> tuple[dt.datetime, dt.datetime] | None:
    """The first and last time of a panel drawn on a time axis, if it has rows."""
    if not (result.rows and has_time_axis(result)):
        return None
    index = next((i for i, t in enumerate(result.types) if is_time(t)), None)
    if index is None:
        return None
    stamps = [utc(r[index]) for r in result.rows if r[index] is not None]
    return (min(stamps), max(stamps)) if stamps else None


def shared_frame(results: list[PanelResult], time_from: dt.datetime, time_to: dt.datetime,
                 interval_s: int) -> Frame:
    """One time range for every chart, so their axes line up: the span the data covers
    within the asked range (padded a little), not the whole range when data fills a sliver
    of it."""
    extents = [e for e in map(time_extent, results) if e]
    if not extents:
        return Frame(time_from, time_to, interval_s)
    first = max(time_from, min(e[0] for e in extents))
    last = min(time_to, max(e[1] for e in extents))
    pad = max((last - first) * 0.03, dt.timedelta(seconds=interval_s))
    return Frame(max(time_from, first - pad), min(time_to, last + pad), interval_s)


def has_time_axis(result: PanelResult) -> bool:
    return (result.panel.report_as or result.panel.kind) in ("timeseries", "state", "logs")


def figure_json(result: PanelResult, frame: Frame) -> str:
    """The figure as JSON that is safe inside a ``<script>`` element."""
    spec = json.loads(figure(result, frame).to_json())
    # "<" only occurs inside JSON strings, where \u003c means the same to JSON.parse
    return json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
