"""The dashboards as one static HTML page of charts, for the embedded default where no
Grafana runs (``agentledger report``).

The charts are drawn by Plotly (``figures.py`` turns each panel's rows into a figure); its
JavaScript is embedded in the page, so the file opens anywhere, offline, with no request
to any server. Each dashboard is a ``<section>``; each panel a ``<figure>`` holding one
``div.chart``. A small script draws every chart, then marks each one ``data-rendered`` once
Plotly has laid it out and sets ``data-charts``, ``data-rendered`` and ``data-ready`` on
the body, which is what the headless Chromium tests read.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

from plotly.offline import get_plotlyjs

from agentledger.dashboards.figures import figure_json, has_time_axis, shared_frame
from agentledger.dashboards.macros import interval_seconds
from agentledger.dashboards.panels import Dashboard
from agentledger.dashboards.results import PanelResult

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { margin-bottom: 0; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
        gap: 16px; }
figure { background: white; border: 1px solid #ddd; border-radius: 6px; margin: 0;
         padding: 8px 12px; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figcaption { font-weight: 600; margin-bottom: 4px; } .empty { color: #999; }
.meta, .desc { color: #666; font-size: 13px; } .desc { font-weight: normal; }
"""

DRAW = """
<script>
(async () => {
  const figures = JSON.parse(document.getElementById('figures').textContent);
  const config = {displaylogo: false, responsive: true, displayModeBar: false};
  const charts = [...document.querySelectorAll('div.chart')];
  await Promise.all(charts.map(div => {
    const spec = figures[div.dataset.figure];
    return Plotly.newPlot(div, spec.data, spec.layout, config);
  }));
  let drawn = 0;
  for (const div of charts) {
    const box = div.getBoundingClientRect();
    const marks = div.querySelectorAll(
      '.main-svg path.point, .main-svg .bars path, .main-svg .scatterlayer path.js-line, ' +
      '.main-svg .table .cell rect, .main-svg .table-control-view').length;
    if (box.width > 0 && box.height > 0 && marks > 0) { div.dataset.rendered = 'yes'; drawn++; }
  }
  document.body.dataset.charts = String(charts.length);
  document.body.dataset.rendered = String(drawn);
  document.body.dataset.ready = 'yes';
})().catch(error => { console.error(error); document.body.dataset.ready = 'failed'; });
</script>
"""


def _panel_html(result: PanelResult, index: int | None) -> str:
    panel = result.panel
    caption = (f"<figcaption>{html.escape(panel.title)}"
               + (f" <span class='desc'>{html.escape(panel.description)}</span>"
                  if panel.description else "") + "</figcaption>")
    if result.error:
        body = f"<p class='empty'>query failed: {html.escape(result.error)}</p>"
    elif index is None:
        body = "<p class='empty'>no data in this range</p>"
    else:
        time_axis = "yes" if has_time_axis(result) else "no"
        body = (f'<div class="chart" id="chart-{index}" data-figure="{index}" '
                f'data-title="{html.escape(panel.title)}" data-time-axis="{time_axis}"></div>')
    wide = " class='wide'" if panel.width >= 24 else ""
    return f"<figure{wide}>{caption}{body}</figure>"


def render(dashboards: Sequence[tuple[Dashboard, Sequence[PanelResult]]], *,
           generated_at: dt.datetime, time_from: dt.datetime, time_to: dt.datetime,
           source: str) -> str:
    """The whole page; a panel without rows or with an error says so instead of a chart."""
    frame = shared_frame([r for _, rs in dashboards for r in rs if not r.error], time_from,
                         time_to, interval_seconds(time_from, time_to))
    figures: list[str] = []
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>agentledger report</title><style>{STYLE}</style>"
             f"<script>{get_plotlyjs()}</script></head><body><h1>agentledger</h1>"
             f"<p class='meta'>{html.escape(source)} · {time_from:%Y-%m-%d %H:%M} to "
             f"{time_to:%Y-%m-%d %H:%M} UTC · generated {generated_at:%Y-%m-%d %H:%M:%S} UTC"
             " · charts by Plotly, hover for exact values</p>"]
    for spec, results in dashboards:
        parts.append(f"<section id='{html.escape(spec.uid)}'><h2>{html.escape(spec.title)}"
                     f"</h2><p class='meta'>{html.escape(spec.description)}</p>"
                     "<div class='grid'>")
        for result in results:
            index = None
            if result.rows and not result.error:
                index = len(figures)
                figures.append(figure_json(result, frame))
            parts.append(_panel_html(result, index))
        parts.append("</div></section>")
    parts.append(f"<script type='application/json' id='figures'>[{','.join(figures)}]"
                 f"</script>{DRAW}</body></html>")
    return "".join(parts)
