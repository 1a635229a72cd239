"""agentledger: an accountable execution ledger and control loop for production AI agents."""

__version__ = "0.1.0"
