"""What a person would check in the HTML report, done by a headless Chromium (tests/cdp.py).

Kept out of the test module so the test reads as a list of claims.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from tests.cdp import Browser

LAYOUT = """(() => {
  const box = el => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
  const texts = (el, sel) => [...el.querySelectorAll(sel)].map(t => t.textContent);
  return [...document.querySelectorAll('section')].map(s => ({
    id: s.id, box: box(s),
    charts: [...s.querySelectorAll('div.chart')].map(d => ({
      title: d.dataset.title, box: box(d), rendered: d.dataset.rendered === 'yes',
      timeAxis: d.dataset.timeAxis === 'yes', table: !!d.querySelector('.table'),
      xticks: texts(d, '.xtick text'), yticks: texts(d, '.ytick text'),
      titles: texts(d, '.g-xtitle text, .g-ytitle text')})),
  }));
})()"""
LOCAL = ("file:", "data:", "blob:", "about:")
CLOCK = re.compile(r"^\d\d:\d\d")


def _ink(png: bytes, section: dict[str, Any], chart: dict[str, Any]) -> tuple[float, int]:
    """Share of the chart's pixels that are not the white background, and how many are
    coloured (a line, a bar, a state band: not just black text and grey grid lines)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    left = round(chart["box"]["x"] - section["box"]["x"])
    top = round(chart["box"]["y"] - section["box"]["y"])
    crop = image.crop((left, top, left + round(chart["box"]["w"]),
                       top + round(chart["box"]["h"])))
    pixels = list(crop.getdata())
    ink = sum(1 for p in pixels if min(p) < 235)
    coloured = sum(1 for p in pixels if max(p) - min(p) > 60)
    return ink / max(len(pixels), 1), coloured


def _problems(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(str([a.get("value", a.get("description")) for a in params["args"]]))
        elif method == "Runtime.exceptionThrown":
            errors.append(str(params["exceptionDetails"].get("text")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(LOCAL):
                requests.append(url)
        elif method == "Network.loadingFailed":
            requests.append(f"failed: {params.get('errorText')}")
    return errors, requests


def check_report_page(page: Browser, path: Path, shots: Path) -> dict[str, Any]:
    """Load the report; assert every claim; return what was counted."""
    page.call("Page.navigate", url=path.as_uri())
    assert page.wait_for("document.body && document.body.dataset.ready") == "yes"
    sections = page.evaluate(LAYOUT)
    counted = {"sections": len(sections), "charts": 0, "time_axes": 0}
    units: set[str] = set()
    shots.parent.mkdir(parents=True, exist_ok=True)
    for section in sections:
        b = section["box"]
        png = page.screenshot(b["x"], b["y"], b["w"], b["h"])
        Path(f"{shots}-{section['id']}.png").write_bytes(png)
        for chart in section["charts"]:
            name = f"{section['id']} / {chart['title']}"
            assert chart["rendered"], f"{name}: Plotly drew nothing"
            ink, coloured = _ink(png, section, chart)
            assert ink > 0.005, f"{name}: only {ink:.2%} of its box is not background"
            if not chart["table"]:
                assert coloured > 100, f"{name}: no coloured marks ({coloured} pixels)"
                assert any(t.strip() for t in chart["titles"]), f"{name}: no axis title"
            if chart["timeAxis"]:
                assert any(CLOCK.match(t) for t in chart["xticks"]), (name, chart["xticks"])
                assert any("UTC" in t for t in chart["titles"]), (name, chart["titles"])
                counted["time_axes"] += 1
            ticks = " ".join(chart["yticks"] + chart["xticks"])
            units |= {u for u in ("%", "$", " ms", "/s") if u in ticks}
            counted["charts"] += 1
    assert units == {"%", "$", " ms", "/s"}, f"axes carry units: found only {units}"
    errors, requests = _problems(page.events)
    assert not errors, f"console errors: {errors[:5]}"
    assert not requests, f"the page made requests: {requests[:5]}"
    return counted
