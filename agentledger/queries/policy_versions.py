"""The tool policy's versions, kept so the console can show what changed.

A decision records its ``policy_version`` (the catalog's version + a hash of the files,
:meth:`agentledger.producers.gate.Gate.load`), but nothing kept the *text* of a version once
its files were edited: the version names it, nothing can show it. So whoever reads the
policy for people (``GET /v1/permissions``, ``agentledger tool-policy matrix``) records a
snapshot of the loaded files under ``<data_dir>/policy-versions/<version>.json`` the first
time it meets that version. "The previous version" is the newest snapshot recorded before
the current one; its diff is a unified diff of the files.

Limits: a version that was loaded but never read through those two is not recorded (the
diff then spans it); snapshots are small text files, kept until deleted by hand.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from agentledger.producers.gate import Gate

DIR_NAME = "policy-versions"
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _files(gate: Gate) -> dict[str, str]:
    paths = [gate.source / "catalog.yaml", *sorted(gate.source.glob("*.cedar"))]
    return {p.name: p.read_text() for p in paths if p.is_file()}


def record(gate: Gate, data_dir: Path) -> Path | None:
    """Snapshot the loaded policy if its version is new here; the file, None if it could
    not be written (a read-only data dir: the page then shows no diff, nothing fails)."""
    root = data_dir / DIR_NAME
    path = root / f"{_SAFE.sub('_', gate.version)}.json"
    if path.exists():
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"policy_id": gate.policy_id, "version": gate.version,
                                   "recorded_at": time.time(), "files": _files(gate)}))
        tmp.replace(path)
    except OSError:
        return None
    return path


def history(data_dir: Path) -> list[dict[str, Any]]:
    """Every recorded snapshot, oldest first."""
    found = []
    for path in (data_dir / DIR_NAME).glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda s: float(s.get("recorded_at", 0)))


def version_view(gate: Gate, data_dir: Path) -> dict[str, Any]:
    """The current version, the previous one recorded, and the diff between them."""
    record(gate, data_dir)
    snaps = history(data_dir)
    mine = next((s for s in snaps if s["version"] == gate.version), None)
    before = [s for s in snaps if s["version"] != gate.version and (
        mine is None or s["recorded_at"] <= mine["recorded_at"])]
    previous = before[-1] if before else None
    diff: list[str] = []
    if previous is not None:
        old, new = previous.get("files", {}), _files(gate)
        for name in sorted(set(old) | set(new)):
            diff += difflib.unified_diff(
                old.get(name, "").splitlines(), new.get(name, "").splitlines(),
                f"{previous['version']}/{name}", f"{gate.version}/{name}", lineterm="")
    return {"policy_id": gate.policy_id, "version": gate.version,
            "recorded_at": mine["recorded_at"] if mine else None,
            "previous": previous["version"] if previous else None,
            "previous_recorded_at": previous["recorded_at"] if previous else None,
            "diff": "\n".join(diff), "versions": [s["version"] for s in snaps]}
