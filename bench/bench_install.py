"""What ``pip install agentledger`` costs an agent: disk and import time of the SDK-only install.

Builds the wheel from this repository, installs it into a fresh virtual environment (the
base install, no extra) and measures, beside a bare venv and ``import json`` in the same
run:

- ``base_site_packages_mb``: the size of site-packages beyond a bare venv's (goal ≤ 80);
- ``import_ledger_ms``: ``python -c "import agentledger; agentledger.Ledger"``, cold (a new
  interpreter each time; the files are in the page cache after the first run, as on an
  agent host), median and max of ``--runs`` (goal ≤ 300);
- ``top_level_names``: the top-level names the wheel installs (goal: exactly agentledger).

Usage: ``python bench/bench_install.py [--runs 15] [--json]``. Installs come from the
package index (pip's cache makes them quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) \
        / 1e6


def site_packages(env: Path) -> Path:
    (found,) = env.glob("lib/python*/site-packages")
    return found


def cold_ms(python: Path, code: str, runs: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", code], cwd=cwd, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "source"  # pip builds in place: build from a copy, not the checkout
        shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".agentledger", "build", "dist", "*.egg-info", "__pycache__",
            ".*_cache", "node_modules"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                        str(work / "dist"), str(source)], check=True, cwd=work)
        (wheel,) = (work / "dist").glob("agentledger-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            tops = sorted({name.split("/")[0] for name in archive.namelist()
                           if not name.split("/")[0].endswith(".dist-info")})

        for name in ("bare", "base"):
            venv.EnvBuilder(with_pip=True).create(work / name)
        subprocess.run([str(work / "base/bin/python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", str(wheel)], check=True, cwd=work)
        bare_mb = tree_mb(site_packages(work / "bare"))
        base_mb = tree_mb(site_packages(work / "base"))
        biggest = sorted(((round(tree_mb(p), 1), p.name) for p in
                          site_packages(work / "base").iterdir() if p.is_dir()), reverse=True)

        python = work / "base/bin/python"
        cold_ms(python, "import agentledger; agentledger.Ledger", 2, work)  # warm the page cache
        ledger = cold_ms(python, "import agentledger; agentledger.Ledger", args.runs, work)
        plain = cold_ms(python, "import json", args.runs, work)

    result = {
        "base_site_packages_mb": round(base_mb - bare_mb, 1),
        "bare_venv_site_packages_mb": round(bare_mb, 1),
        "largest_packages_mb": dict((n, mb) for mb, n in biggest[:8]),
        "import_ledger_ms_median": round(statistics.median(ledger), 1),
        "import_ledger_ms_max": round(max(ledger), 1),
        "import_json_ms_median": round(statistics.median(plain), 1),
        "top_level_names": tops,
        "runs": args.runs,
        "goals": {"base_site_packages_mb": 80, "import_ledger_ms": 300,
                  "top_level_names": ["agentledger"]},
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
