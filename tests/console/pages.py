"""Every console page the browser tests visit (accessibility, screenshots, no request
leaving the machine). A new page adds its path here; ``{run}`` is a finished run's id.

Each entry: (name, path, who signs in). Engineers adding pages extend ``PAGES``.
"""

from __future__ import annotations

PAGES: list[tuple[str, str, str]] = [
    ("signin", "/console/signin", ""),
    ("inbox", "/console/inbox", "ana"),
    ("runs", "/console/runs", "ana"),
    ("run", "/console/runs/{run}", "ana"),
    ("search", "/console/search?since=1h", "ana"),
    ("not-found", "/console/runs/no-such-run", "ana"),
    ("permissions", "/console/permissions", "ana"),
    ("control", "/console/control?scope=acme/refund-agent", "ana"),
    ("webhooks", "/console/webhooks", "ana"),
]
