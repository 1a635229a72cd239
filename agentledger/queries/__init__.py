"""What the ledger API answers, as functions of a ClickHouse client and a caller's scope.

Each module answers one family of questions. None builds SQL from user text: filters are
``{name:Type}`` parameters, and the only spliced fragments are fixed strings chosen from
allow-lists in this package. Every query is limited to the caller's tenants.
"""
