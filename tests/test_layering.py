"""Imports follow the layers the folders show, and no module imports itself back.

From the bottom: ``schemas`` (the contracts) imports nothing of the project; ``core`` (the
foundation: settings, Kafka config, the ClickHouse client factory, logging, discovery)
imports only ``schemas``; the pipeline (``producers``, ``streams``, ``sinks``) and
``dashboards`` import ``schemas``, ``core`` and themselves; the shell (``agentledger``: CLI,
API, services, supervisor) sits on top and may import any of them, none of them it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "core", "producers", "streams", "sinks", "dashboards", "agentledger")
ALLOWED = {
    "schemas": {"schemas"},
    "core": {"schemas", "core"},
    "producers": {"schemas", "core", "producers"},
    "streams": {"schemas", "core", "streams"},
    "sinks": {"schemas", "core", "sinks"},
    "dashboards": {"schemas", "core", "dashboards"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, in a function or under TYPE_CHECKING.

    ``from package import module`` counts as importing the module, not the package."""
    known = modules()
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{a.name}" for a in node.names} & known.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(base)
    return found


def test_no_layer_imports_upwards():
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            for module in imports(path):
                top = module.split(".")[0]
                if top in PACKAGES and top not in allowed:
                    problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, problems


def test_schemas_import_nothing_of_the_project():
    for path in (ROOT / "schemas").rglob("*.py"):
        for module in imports(path):
            assert module.split(".")[0] not in set(PACKAGES) - {"schemas"}, path


def test_no_import_cycle():
    known = modules()
    graph = {name: sorted(m for m in imports(path) if m in known and m != name)
             for name, path in known.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name):], name]
        if name in done:
            return None
        for target in graph[name]:
            cycle = visit(target, [*trail, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        assert cycle is None, " → ".join(cycle or [])
