"""The ``agentledger`` command line. Every command explains itself with ``--help``.

:mod:`~agentledger.cli.app` registers the command groups (one module each);
:mod:`~agentledger.cli.render` prints tables, JSON and errors; :mod:`~agentledger.cli.connect`
finds the settings, the broker and the ledger API.
"""

from agentledger.cli.app import app, main

__all__ = ["app", "main"]
