"""The shape the code keeps (``bench/`` aside): no file over 400 lines, no function over 80,
and no private name (``_x``) of a package imported from another module (the tests' own
helpers aside: they are not part of what the packages promise)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "core", "producers", "intake", "streams", "sinks", "dashboards",
            "agentledger")
OURS = (*PACKAGES, "tests", "scripts", "deploy", "examples")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def sources() -> list[Path]:
    return sorted(p for top in OURS if (ROOT / top).is_dir() for p in (ROOT / top).rglob("*.py"))


def parsed(path: Path) -> ast.Module:
    """The file's syntax tree; one that does not parse is ruff's to report, not ours."""
    try:
        return ast.parse(path.read_text())
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def test_no_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def test_no_function_over_80_lines():
    long = {}
    for path in sources():
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, long


def test_no_private_name_imported_across_modules():
    found = []
    for path in sources():
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] in PACKAGES:
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.endswith("__")]
    assert not found, found
