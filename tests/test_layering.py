"""Imports follow the layers the folders show, and no module imports itself back.

Everything is importable under one name, ``agentledger``; each top-level folder of the
repository is one subpackage of it (``schemas/`` is ``agentledger.schemas``: the folders
are linked into ``agentledger/``, see docs/architecture.md). From the bottom: ``schemas``
(the contracts) imports nothing of the project; ``core`` (the foundation: settings, Kafka
config, the ClickHouse client factory, dead letters, the offset-gap guard, the compacted
topic follower, logging, discovery) imports only ``schemas``; the pipeline (``producers``
the SDK, ``intake``, ``streams``, ``sinks``) and ``dashboards`` import ``schemas``,
``core`` and themselves; the shell (the rest of ``agentledger``: CLI, API, services,
supervisor) sits on top and may import any of them, none of them it.

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so those count
as imports too. The root package's ``__init__`` is the one exception the layers allow:
every module imports it, and it re-exports the SDK lazily (on attribute access), so it
may name ``agentledger.producers`` and nothing else, and imports nothing eagerly.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "agentledger"
LAYERS = ("schemas", "core", "producers", "intake", "streams", "sinks", "dashboards")
SHELL = "shell"
ALLOWED = {
    "schemas": {"schemas"},
    "core": {"schemas", "core"},
    "producers": {"schemas", "core", "producers"},
    "intake": {"schemas", "core", "intake"},
    "streams": {"schemas", "core", "streams"},
    "sinks": {"schemas", "core", "sinks"},
    "dashboards": {"schemas", "core", "dashboards"},
}
ROOT_MAY_IMPORT = {"producers"}


def module_name(path: Path) -> str:
    """The importable name of a file of the repo: ``core/x.py`` is ``agentledger.core.x``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in LAYERS:
        parts.insert(0, NAMESPACE)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer a module of the namespace belongs to; None for the root package itself."""
    parts = module.split(".")
    if parts[0] != NAMESPACE or len(parts) == 1:
        return None
    return parts[1] if parts[1] in LAYERS else SHELL


def sources() -> list[Path]:
    """The package's files: the layer folders, and the shell's own (not its links)."""
    found = [p for name in LAYERS if (ROOT / name).is_dir() for p in (ROOT / name).rglob("*.py")]
    shell = ROOT / NAMESPACE
    found += [p for p in shell.rglob("*.py") if p.relative_to(shell).parts[0] not in LAYERS]
    return found


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sources()}


def with_parents(module: str) -> set[str]:
    """``a.b.c`` and the packages whose ``__init__`` importing it runs: ``a``, ``a.b``."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, in a function or under TYPE_CHECKING,
    with the packages whose ``__init__`` that runs.

    ``from package import module`` counts as importing the module, not the package."""
    known = modules()
    found: set[str] = set()
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for sub in {f"{base}.{a.name}" for a in node.names} & known.keys():
                found |= with_parents(sub)
            found |= with_parents(base)
    # A module's own packages are already running when it is imported.
    return found - with_parents(package) if package else found


def test_no_layer_imports_upwards() -> None:
    problems = []
    for path in sources():
        own = layer(module_name(path))
        for module in imports(path):
            target = layer(module)
            if module.split(".")[0] != NAMESPACE or target is None:
                continue
            if own is None:
                if target not in ROOT_MAY_IMPORT:
                    problems.append(f"{path.relative_to(ROOT)} (the root) imports {module}")
            elif own != SHELL and target not in ALLOWED[own]:
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, problems


def test_schemas_import_nothing_of_the_project() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        for module in imports(path):
            assert layer(module) in (None, "schemas"), f"{path} imports {module}"


def test_no_module_imports_a_bare_layer_name() -> None:
    """Only ``agentledger.<layer>`` exists once installed; a bare ``core`` or ``schemas``
    would be whichever package of that name comes first on the user's ``sys.path``."""
    problems = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0].startswith(".") or relative.parts[0] in ("build", "dist") \
                or "node_modules" in relative.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            problems += [f"{relative}:{node.lineno} imports {name}" for name in names
                         if name.split(".")[0] in LAYERS]
    assert not problems, problems


def test_the_root_package_imports_nothing_eagerly() -> None:
    """``import agentledger`` is what every module pays for first: it must stay cheap."""
    tree = ast.parse((ROOT / NAMESPACE / "__init__.py").read_text())
    eager = [node for node in tree.body
             if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAMESPACE))
             or (isinstance(node, ast.Import) and any(a.name.startswith(NAMESPACE)
                                                     for a in node.names))]
    assert not eager, [ast.unparse(node) for node in eager]


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: sorted(m for m in imports(path)
                          if m in known and m != name and m != NAMESPACE)
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
