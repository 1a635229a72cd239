"""Imports follow the data flow: producers → Kafka → streams/sinks → ClickHouse → API.

``schemas`` is shared by all. The foundation modules of ``agentledger`` (settings, the
Kafka config builder, the ClickHouse client factory, logging, discovery) may be used by any
layer; the shell (CLI, API, services, supervisor) by none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {"agentledger", "agentledger.settings", "agentledger.kafka",
              "agentledger.clickhouse", "agentledger.logs", "agentledger.discovery"}
ALLOWED = {
    "schemas": {"schemas"},
    "producers": {"schemas", "producers"},
    "streams": {"schemas", "streams"},
    "sinks": {"schemas", "sinks"},
    "dashboards": {"schemas", "dashboards"},
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_layer_imports_backwards():
    ours = {"schemas", "producers", "streams", "sinks", "dashboards", "agentledger"}
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            for module in imports(path):
                top = module.split(".")[0]
                if top not in ours or top in allowed or module in FOUNDATION:
                    continue
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, problems


def test_schemas_import_nothing_of_the_project():
    for path in (ROOT / "schemas").rglob("*.py"):
        for module in imports(path):
            assert module.split(".")[0] not in {"producers", "streams", "sinks",
                                                 "dashboards", "agentledger"}, path
