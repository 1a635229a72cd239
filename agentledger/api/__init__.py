"""The ledger HTTP API: :func:`agentledger.api.app.create_app` wires one router per query
family (and mounts the web console, :mod:`agentledger.console`).

This package's ``__init__`` imports nothing: the console's pages import the API's route
modules (the same vote, the same dependencies), and the app imports the console, so an
eager ``create_app`` here would make every route module import the whole app.
"""
