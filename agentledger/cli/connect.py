"""What a command connects to: the settings, the Kafka broker, the ledger API.

Commands call these through the module (``connect.ledger()``), so a test can point them
at another ledger.
"""

from __future__ import annotations

from typing import Any

from agentledger.cli.render import UserError
from agentledger.core import discovery, logs
from agentledger.core.settings import Settings, load_settings


def debug_requested() -> bool:
    """``AGENTLEDGER_DEBUG`` set: show the traceback behind a one-line error."""
    try:
        return load_settings().debug
    except ValueError:  # the settings themselves are the error being reported
        return False


def settings(**overrides: Any) -> Settings:
    """The settings, with the CLI's flags on top; configures logging to match."""
    loaded = load_settings(**overrides)
    logs.configure(loaded.log_level, loaded.log_json)
    return loaded


def bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap servers: configured, or those of a running `agentledger up`."""
    found = discovery.bootstrap_servers(settings)
    if not found:
        raise UserError("no Kafka broker: start `agentledger up` in another terminal, "
                        "or set AGENTLEDGER_KAFKA_BOOTSTRAP")
    return found


def ledger(loaded: Settings | None = None) -> Any:
    """A :class:`agentledger.api_client.LedgerClient` for the configured ledger API."""
    from agentledger.api_client import open_ledger

    return open_ledger(loaded or settings())
