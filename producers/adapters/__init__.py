"""Adapters that put the ledger under agent frameworks; each is an optional extra
(docs/adapters.md). Import the one you use: nothing here imports a framework."""
