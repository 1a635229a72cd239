"""Where a running embedded stack says it is.

``agentledger up`` (and a store-owning sink) write ``<data_dir>/run/*.json`` so that a
second process — ``simulate``, ``sql`` — finds the broker and the store's owner without
flags. A file whose pid is gone is ignored, so a ``kill -9`` leaves nothing misleading.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from agentledger.core.settings import Settings

BROKER_FILE = "broker.json"
STORE_FILE = "store.json"
SUPERVISOR_FILE = "supervisor.json"
"""Written by ``agentledger up`` from its first moment: the stack's state and children."""
INTAKE_FILE = "intake.json"
"""The OTel intake's OTLP/HTTP endpoint (``otlp_http_url``), for exporters and benches."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(settings: Settings, name: str, info: dict[str, Any]) -> Path:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}))
    tmp.replace(path)
    return path


def withdraw(settings: Settings, name: str) -> None:
    path = settings.run_dir / name
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def lookup(settings: Settings, name: str) -> dict[str, Any] | None:
    """The published info if its process is still alive, else None."""
    try:
        info = json.loads((settings.run_dir / name).read_text())
    except (OSError, ValueError):
        return None
    return info if _alive(int(info.get("pid", -1))) else None


def bootstrap_servers(settings: Settings) -> str | None:
    """Configured bootstrap, else the one a running embedded broker published."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    info = lookup(settings, BROKER_FILE)
    return info["bootstrap"] if info else None


def store_api_url(settings: Settings) -> str | None:
    """Configured API URL, else the one the process owning the embedded store published."""
    if settings.api_url:
        return settings.api_url
    info = lookup(settings, STORE_FILE)
    return info["api_url"] if info else None
