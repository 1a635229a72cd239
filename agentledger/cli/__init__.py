"""The ``agentledger`` command line. Every command explains itself with ``--help``.

:mod:`~agentledger.cli.app` registers the command groups (one module each);
:mod:`~agentledger.cli.render` prints tables, JSON and errors; :mod:`~agentledger.cli.connect`
finds the settings, the broker and the ledger API.

Every command is a server command: ``pip install agentledger`` (the SDK alone) installs the
``agentledger`` script too, and :func:`main` then answers with the one line that names the
extra to install, rather than a traceback from a missing module.
"""

from __future__ import annotations

import sys
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name == "app":
        from agentledger.cli.app import app

        return app
    raise AttributeError(f"module 'agentledger.cli' has no attribute {name!r}")


__all__ = ["app", "main"]
