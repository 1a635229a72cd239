"""The dashboards as one static HTML page of charts, for the embedded default where no
Grafana runs (``agentledger report``).

Each panel's result becomes an inline SVG picture: a line chart per series for time
series, horizontal bars for a label and a number, bands for state timelines, and, for
tables and logs, bars of how many rows each value of their first label column has. No
JavaScript library and no network: the page opens anywhere, offline. A small script marks
each chart ``data-rendered`` once the browser has laid it out, which is what the headless
Chromium test checks.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dashboards.panels import Dashboard, Panel

WIDTH, HEIGHT, PAD = 560, 220, 36
PALETTE = ("#3274d9", "#e0752d", "#56a64b", "#a352cc", "#f2cc0c", "#e02f44", "#8ab8ff",
           "#ff9830", "#73bf69", "#ca95e5")
STATE_COLORS = {"CLOSED": "#56a64b", "OPEN": "#e02f44", "HALF_OPEN": "#f2cc0c",
                "normal": "#56a64b", "read_only": "#e0752d", "halted": "#e02f44"}


@dataclass(frozen=True)
class PanelResult:
    panel: Panel
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    error: str | None = None


def _is_time(type_name: str) -> bool:
    return type_name.startswith(("DateTime", "Date"))


def _is_number(type_name: str) -> bool:
    return any(t in type_name for t in ("Int", "Float", "Decimal"))


def _ts(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _svg(body: str, title: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{html.escape(title)}">{body}</svg>')


def _axes() -> str:
    return (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 8}" y2="{HEIGHT - PAD}" '
            f'stroke="#888"/><line x1="{PAD}" y1="8" x2="{PAD}" y2="{HEIGHT - PAD}" '
            'stroke="#888"/>')


def line_chart(result: PanelResult) -> str:
    time_i = next(i for i, t in enumerate(result.types) if _is_time(t))
    label_i = next((i for i, t in enumerate(result.types)
                    if i != time_i and not _is_number(t)), None)
    value_i = next(i for i, t in enumerate(result.types) if i != time_i and _is_number(t))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in result.rows:
        name = str(row[label_i]) if label_i is not None else result.columns[value_i]
        value = row[value_i]
        series.setdefault(name, []).append((_ts(row[time_i]), float(value or 0)))
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y1 = max(ys) if ys and max(ys) > 0 else 1.0
    body = [_axes()]
    for n, (name, points) in enumerate(sorted(series.items())):
        coords = " ".join(
            f"{PAD + (x - x0) / (x1 - x0) * (WIDTH - PAD - 12):.1f},"
            f"{HEIGHT - PAD - y / y1 * (HEIGHT - PAD - 14):.1f}" for x, y in sorted(points))
        color = PALETTE[n % len(PALETTE)]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                    f'points="{coords}"/>')
        if len(points) == 1:  # one bucket draws no line: mark the point
            x, y = coords.split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{color}"/>')
        body.append(f'<text x="{PAD + 6 + (n % 4) * 130}" y="{HEIGHT - 8 - (n // 4) * 12}" '
                    f'font-size="10" fill="{color}">{html.escape(name[:22])}</text>')
    body.append(f'<text x="2" y="14" font-size="10" fill="#555">{y1:.3g}</text>')
    return _svg("".join(body), result.panel.title)


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    top = max(values) if values and max(values) > 0 else 1.0
    shown = list(zip(labels, values, strict=True))[:10]
    bar_h = (HEIGHT - 12) / max(len(shown), 1)
    body = []
    for n, (label, value) in enumerate(shown):
        width = max(1.0, value / top * (WIDTH - 220))
        y = 6 + n * bar_h
        body.append(f'<text x="4" y="{y + bar_h * 0.65:.1f}" font-size="11">'
                    f'{html.escape(str(label)[:28])}</text>'
                    f'<rect x="180" y="{y:.1f}" width="{width:.1f}" height="{bar_h * 0.7:.1f}" '
                    f'fill="{PALETTE[n % len(PALETTE)]}"/>'
                    f'<text x="{184 + width:.1f}" y="{y + bar_h * 0.65:.1f}" font-size="10">'
                    f'{value:.4g}</text>')
    return _svg("".join(body), title)


def state_chart(result: PanelResult) -> str:
    time_i = next(i for i, t in enumerate(result.types) if _is_time(t))
    scope_i, state_i = [i for i, t in enumerate(result.types) if not _is_time(t)][:2]
    by_scope: dict[str, list[tuple[float, str]]] = {}
    for row in result.rows:
        by_scope.setdefault(str(row[scope_i]), []).append((_ts(row[time_i]), str(row[state_i])))
    times = [t for changes in by_scope.values() for t, _ in changes]
    t0, t1 = min(times), max(times) + max(1.0, (max(times) - min(times)) * 0.1)
    lane = (HEIGHT - 30) / max(len(by_scope), 1)
    body = []
    for n, (scope, changes) in enumerate(sorted(by_scope.items())):
        changes.sort()
        y = 4 + n * lane
        body.append(f'<text x="4" y="{y + lane * 0.6:.1f}" font-size="10">'
                    f'{html.escape(scope[:24])}</text>')
        for k, (start, state) in enumerate(changes):
            end = changes[k + 1][0] if k + 1 < len(changes) else t1
            x = 150 + (start - t0) / (t1 - t0) * (WIDTH - 160)
            w = max(2.0, (end - start) / (t1 - t0) * (WIDTH - 160))
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                        f'height="{lane * 0.7:.1f}" fill="{STATE_COLORS.get(state, "#8ab8ff")}">'
                        f'<title>{html.escape(state)}</title></rect>')
    legend = "".join(f'<text x="{150 + i * 80}" y="{HEIGHT - 6}" font-size="10" '
                     f'fill="{c}">{s}</text>'
                     for i, (s, c) in enumerate(list(STATE_COLORS.items())[:5]))
    return _svg("".join(body) + legend, result.panel.title)


def chart(result: PanelResult) -> str:
    """The picture of one panel's rows (assumes rows; see :func:`render`)."""
    kind, types = result.panel.kind, result.types
    if kind == "timeseries":
        return line_chart(result)
    if kind == "state":
        return state_chart(result)
    label_i = next((i for i, t in enumerate(types) if not _is_number(t) and not _is_time(t)), 0)
    value_i = next((i for i, t in enumerate(types) if _is_number(t)), None)
    if kind in ("bar", "stat") and value_i is not None:
        return bar_chart([r[label_i] for r in result.rows],
                         [float(r[value_i] or 0) for r in result.rows], result.panel.title)
    if result.panel.picture and set(result.panel.picture) <= set(result.columns):
        label, value = (result.columns.index(c) for c in result.panel.picture)
        return bar_chart([r[label] for r in result.rows],
                         [float(r[value] or 0) for r in result.rows],
                         f"{result.panel.title}: {result.panel.picture[1]}")
    # tables and logs: how many rows each value of the first label column has
    counts: dict[str, float] = {}
    column = label_i
    if kind == "logs" and "level" in result.columns:
        column = result.columns.index("level")
    for row in result.rows:
        counts[str(row[column])] = counts.get(str(row[column]), 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return bar_chart([k for k, _ in ordered], [v for _, v in ordered],
                     f"{result.panel.title}: rows by {result.columns[column]}")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { margin-bottom: 0; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
figure { background: white; border: 1px solid #ddd; border-radius: 6px; margin: 0;
         padding: 8px 12px; }
figcaption { font-weight: 600; margin-bottom: 4px; } .empty { color: #999; }
.meta { color: #666; font-size: 13px; }
"""

CHECK = """
<script>
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')];
  let drawn = 0;
  for (const svg of charts) {
    const box = svg.getBoundingClientRect();
    const marks = svg.querySelectorAll('polyline, rect').length;
    if (box.width > 0 && box.height > 0 && marks > 0) { svg.dataset.rendered = 'yes'; drawn++; }
  }
  document.body.dataset.charts = String(charts.length);
  document.body.dataset.rendered = String(drawn);
});
</script>
"""


def render(dashboards: Sequence[tuple[Dashboard, Sequence[PanelResult]]], *,
           generated_at: dt.datetime, time_from: dt.datetime, time_to: dt.datetime,
           source: str) -> str:
    """The whole page; a panel without rows or with an error says so instead of a chart."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>agentledger report"
             f"</title><style>{STYLE}</style></head><body><h1>agentledger</h1>"
             f"<p class='meta'>{html.escape(source)} · {time_from:%Y-%m-%d %H:%M} to "
             f"{time_to:%Y-%m-%d %H:%M} UTC · generated {generated_at:%Y-%m-%d %H:%M:%S} UTC"
             "</p>"]
    for spec, results in dashboards:
        parts.append(f"<h2>{html.escape(spec.title)}</h2><p class='meta'>"
                     f"{html.escape(spec.description)}</p><div class='grid'>")
        for result in results:
            if result.error:
                body = f"<p class='empty'>query failed: {html.escape(result.error)}</p>"
            elif not result.rows:
                body = "<p class='empty'>no data in this range</p>"
            else:
                body = chart(result)
            parts.append(f"<figure><figcaption>{html.escape(result.panel.title)}"
                         f"</figcaption>{body}</figure>")
        parts.append("</div>")
    parts.append(CHECK + "</body></html>")
    return "".join(parts)
