"""The ``agentledger`` script's entry point, outside :mod:`agentledger.cli` on purpose.

Every command is a server command: ``pip install agentledger`` (the SDK alone) installs the
script too, and importing the CLI package would fail on its first server import (typer).
:func:`main` imports the CLI inside a guard and, on an SDK-only install, answers with the
one line that names the extra to install, exit 2, rather than a traceback.
"""

from __future__ import annotations

import sys

SERVER_EXTRA_HINT = (
    "agentledger: the command line needs the ledger's server packages, which the SDK-only "
    "install leaves out: pip install 'agentledger[server]' (or 'agentledger[embedded]' "
    "for the embedded broker and store)"
)
# Top-level modules of the server extra; a missing one means that extra is not installed.
SERVER_MODULES = frozenset({
    "typer", "rich", "click", "fastapi", "starlette", "uvicorn", "httpx", "clickhouse_connect",
    "faust", "aiokafka", "pyarrow", "plotly", "grafanalib", "attrs", "google",
    "opentelemetry",
})


def main() -> None:
    """Entry point of the ``agentledger`` script."""
    try:
        from agentledger.cli.app import main as run
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        print(SERVER_EXTRA_HINT, file=sys.stderr)
        sys.exit(2)
    run()

