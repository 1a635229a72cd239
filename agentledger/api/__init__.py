"""The ledger HTTP API: :func:`create_app` wires one router per query family."""

from agentledger.api.app import create_app

__all__ = ["create_app"]
