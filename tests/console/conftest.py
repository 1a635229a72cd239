"""Fixtures of the console's browser tests: one stack and one browser for the package.

The browser is Debian's chromium (``make chromium``) driven by Playwright from PyPI, with
no browser download; every request goes through a proxy on a closed port unless it is to
loopback, so a page asking for anything off this machine fails (and is seen failing).
axe-core comes from npm into a cache directory, once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.stack import ConsoleStack, console_stack

CHROMIUM = "/usr/bin/chromium"
AXE_DIR = Path.home() / ".cache" / "agentledger" / "axe-core"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("console")) as built:
        yield built


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium at /usr/bin/chromium: run `make chromium`")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu"],
            proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1"})
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="package")
def axe_script() -> Path:
    """axe-core's axe.min.js, installed from npm into a cache directory on first use."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is needed to install axe-core")
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                               str(AXE_DIR), "axe-core@4"], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and AXE.exists(), done.stderr[-2000:]
    return AXE
