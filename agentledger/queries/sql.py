"""Read-only SQL for people: one statement that reads the ledger, row and time limited.

The decision is made on ClickHouse's own parse, never on a regex over the text:

1. ``formatQuerySingleLine`` parses the statement *as a string value* (it is never run as
   code here) and returns its canonical text; the engine itself refuses a second
   statement. This matters because the embedded engine (chdb) runs every statement of a
   multi-statement text it is handed, so a ``SELECT 1; INSERT …`` must never reach it.
2. ``EXPLAIN AST`` of that canonical text gives the engine's syntax tree, which
   :func:`check_tree` walks against allow-lists: one SELECT/WITH/SHOW TABLES/DESCRIBE/
   EXISTS/SHOW CREATE/EXPLAIN; no ``INTO OUTFILE``; no ``SETTINGS`` (the caps are ours);
   no ``FORMAT`` (the API picks it); table functions only from :data:`TABLE_FUNCTIONS`;
   no function that reads outside the ledger (:data:`DENIED_FUNCTIONS`); ``system.*``
   only for :data:`SYSTEM_TABLES`; no other database than the ledger's.
3. The canonical text — exactly what was checked — is what runs, with the caps passed as
   query settings next to ``readonly=1``, so the statement can neither change a setting
   nor write. Against a ClickHouse server the API also connects as a read-only user
   (``deploy/clickhouse/users.d/agentledger-readonly.xml``) whose grants allow only this.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

READ_STATEMENTS: Final = ("SELECT", "WITH", "SHOW TABLES", "SHOW DATABASES", "SHOW CREATE TABLE",
                          "DESCRIBE", "EXISTS", "EXPLAIN")
# Roots of the trees we accept (EXPLAIN AST names), and what each one is.
_ROOTS: Final = {
    "SelectWithUnionQuery": "SELECT", "SelectIntersectExceptQuery": "SELECT",
    "ShowTables": "SHOW TABLES", "DescribeQuery": "DESCRIBE",
    "ShowCreateTableQuery": "SHOW CREATE TABLE", "ExistsTableQuery": "EXISTS",
    "Explain": "EXPLAIN",
}
TABLE_FUNCTIONS: Final = frozenset({
    # Generate rows from nothing; they reach no file, host, table or network.
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generate_series",
    "generateSeries",
})
"""Table functions a query may use. Every other one is refused: ``file``, ``url``,
``remote``, ``remoteSecure``, ``s3``, ``hdfs``, ``mysql``, ``postgresql``, ``executable``,
``jdbc``, ``odbc``, ``cluster``, ``input``, ``azureBlobStorage``, ``merge``, ``view``,
``dictionary``… — an allow-list, so a table function added to ClickHouse later is refused
until someone decides otherwise."""
DENIED_FUNCTIONS: Final = frozenset({
    # Table functions that reach outside, refused wherever they appear in the tree.
    "file", "filecluster", "url", "urlcluster", "remote", "remotesecure", "cluster",
    "clusterallreplicas", "s3", "s3cluster", "gcs", "oss", "cosn", "hdfs", "hdfscluster",
    "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc", "odbc", "executable",
    "input", "azureblobstorage", "azureblobstoragecluster", "iceberg", "icebergs3",
    "deltalake", "hudi", "merge", "dictionary", "loop", "view", "format",
    # Scalar functions that read files, dictionaries (whose sources may be files, URLs or
    # other servers), Join tables, ML models, or stall the engine.
    "joinget", "joingetornull", "catboostevaluate", "modelevaluate", "sleep",
    "sleepeachrow", "addresstoline", "addresstolinewithinlines", "addresstosymbol",
    "demangle", "getclienthttpheader", "getsetting", "getsettingordefault",
})
SYSTEM_TABLES: Final = frozenset({"one", "numbers", "tables", "columns", "parts", "databases"})
"""The ``system`` tables a query may read: what exists and how big it is. Not users,
grants, settings, query_log, processes, the server's logs or its disks."""
_OTHER_DATABASES: Final = frozenset({"system", "information_schema", "default",
                                     "_temporary_and_external_tables"})
_LINE = re.compile(r"^( *)(\S+)(?: (.*?))?(?: \(alias [^)]*\))?(?: \(children \d+\))?$")


class QueryRefused(ValueError):
    """The statement is not a single read-only query over the ledger; the message says why."""


@dataclass
class Node:
    """One node of ``EXPLAIN AST``: its kind (``Function``, ``TableIdentifier``…), the rest
    of its line (a name), and its children."""

    kind: str
    name: str
    children: list[Node] = field(default_factory=list)

    def walk(self, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
        yield self, parent
        for child in self.children:
            yield from child.walk(self)


def parse_tree(lines: list[str]) -> Node:
    """The tree of ``EXPLAIN AST``'s indented text (one space per level)."""
    root: Node | None = None
    stack: list[tuple[int, Node]] = []
    for line in lines:
        match = _LINE.match(line.rstrip())
        if not match:
            raise QueryRefused(f"could not read the engine's parse of the query: {line!r}")
        depth, node = len(match.group(1)), Node(match.group(2), (match.group(3) or "").strip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise QueryRefused("only one statement at a time")
        stack.append((depth, node))
    if root is None:
        raise QueryRefused("empty query")
    return root


def _check_table(name: str, database: str) -> None:
    parts = name.replace("`", "").split(".")
    if len(parts) < 2:
        return  # the ledger's database (or a WITH name)
    db, table = parts[0], parts[1]
    if db.lower() == "system":
        if table not in SYSTEM_TABLES:
            raise QueryRefused(
                f"system.{table} is not readable here; the system tables allowed are "
                f"{', '.join(f'system.{t}' for t in sorted(SYSTEM_TABLES))}")
        return
    if db != database:
        raise QueryRefused(f"only the ledger's database ({database}) is readable, not {db}")


def _check_root_children(root: Node, database: str) -> None:
    for child in root.children:
        if child.kind == "Literal":
            raise QueryRefused("INTO OUTFILE is not allowed: results come back in the response")
        if child.kind == "Set":
            raise QueryRefused("a SETTINGS clause is not allowed: the API sets the limits")
        if child.kind == "Identifier" and root.kind != "ShowTables" and (
                root.kind not in ("ShowCreateTableQuery", "ExistsTableQuery")) and (
                child.name != "Native"):
            raise QueryRefused("a FORMAT clause is not allowed: the API picks the format")
    if root.kind in ("ShowCreateTableQuery", "ExistsTableQuery"):
        names = root.name.split(" ")
        if len(names) == 2 and names[0]:
            _check_table(".".join(names), database)


def check_tree(root: Node, database: str) -> str:
    """What kind of read ``root`` is, or :class:`QueryRefused` naming what is not allowed."""
    kind = _ROOTS.get(root.kind)
    if kind is None:
        raise QueryRefused(
            f"only read-only queries ({', '.join(READ_STATEMENTS)}) are allowed, "
            f"not {root.kind.removesuffix('Query') or 'this'}")
    _check_root_children(root, database)
    if root.kind == "Explain":
        inner = [c for c in root.children if c.kind in _ROOTS]
        if len(inner) != 1:
            raise QueryRefused("EXPLAIN takes one read-only query")
        check_tree(inner[0], database)
    for node, parent in root.walk():
        if node.kind == "Set":
            raise QueryRefused("a SETTINGS clause is not allowed: the API sets the limits")
        if node.kind == "Function":
            name = node.name.split(" ")[0]
            lowered = name.lower()
            if lowered in DENIED_FUNCTIONS or lowered.startswith("dict"):
                raise QueryRefused(f"{name}() is not allowed: it reads outside the ledger")
            if parent is not None and parent.kind == "TableExpression" and (
                    name not in TABLE_FUNCTIONS):
                raise QueryRefused(
                    f"the table function {name}() is not allowed; allowed: "
                    f"{', '.join(sorted(TABLE_FUNCTIONS))}")
        elif node.kind == "TableIdentifier":
            _check_table(node.name.split(" ")[0], database)
        elif node.kind == "Identifier" and "." in node.name:
            first = node.name.split(".")[0].replace("`", "")
            if first.lower() in _OTHER_DATABASES or first == database:
                _check_table(node.name.split(" ")[0], database)
    return kind


def check_read_only(client: Client, sql: str, parameters: dict[str, Any] | None = None, *,
                    database: str = "agentledger") -> str:
    """The canonical text of ``sql`` if it is one read-only query over the ledger, else
    :class:`QueryRefused` saying why. Asks the engine to parse; runs nothing of ``sql``."""
    if not sql.strip().rstrip(";").strip():
        raise QueryRefused("empty query")
    try:
        # The text travels as a bound string value: parsed, never executed.
        canonical = client.query("SELECT formatQuerySingleLine({q:String})",
                                 parameters={"q": sql}).result_rows[0][0]
    except ClickHouseError as exc:
        raise QueryRefused(_parse_error(str(exc))) from None
    try:
        explained = client.query(f"EXPLAIN AST {canonical}", parameters=parameters or None)
    except ClickHouseError as exc:
        raise QueryRefused(_parse_error(str(exc))) from None
    check_tree(parse_tree([row[0] for row in explained.result_rows]), database)
    return str(canonical)


def _parse_error(message: str) -> str:
    """The engine's reason, without the SQL it quotes back (our wrapper, not the user's)."""
    first = message.strip().splitlines()[0] if message.strip() else "not valid SQL"
    if "Multi-statements are not allowed" in first:
        return "only one statement at a time"
    first = re.sub(r"^(Code: \d+\. DB::Exception: )+", "", first)
    first = re.sub(r": In scope SELECT formatQuerySingleLine\(.*$", "", first)
    first = re.sub(r"\s*\(version [^)]*\)\.?", "", first)
    return f"the query does not parse: {first[:300]}"


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows}


def run_read_only(client: Client, sql: str, parameters: dict[str, Any] | None = None, *,
                  max_rows: int = 10_000, max_seconds: float = 30,
                  database: str = "agentledger", set_readonly: bool = True) -> QueryResult:
    """Check ``sql`` (:func:`check_read_only`), then run its canonical text under caps the
    statement cannot reach.

    ``readonly=1``, set by us in the same SETTINGS as the caps, means the statement may
    change no setting and write nothing. A server's read-only user (``set_readonly=False``)
    already runs with ``readonly=2`` and constraints on the caps in its profile; it may not
    change ``readonly`` itself, so there it is not sent.
    """
    statement = check_read_only(client, sql, parameters, database=database)
    settings: dict[str, Any] = {
        "max_result_rows": max_rows,
        "result_overflow_mode": "throw",
        "max_execution_time": max_seconds,
    }
    if set_readonly:
        settings["readonly"] = 1
    result = client.query(statement, parameters=parameters or None, settings=settings)
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=[list(r) for r in result.result_rows],
    )
# The ingestion summary `make demo` prints; every query reads through FINAL so redelivered
# duplicates never show.
SUMMARY_QUERIES = {
    "events by type": "SELECT event_type, count() AS events FROM events FINAL "
                      "GROUP BY event_type ORDER BY events DESC",
    "runs by outcome": "SELECT outcome, count() AS runs FROM events FINAL "
                       "WHERE event_type = 'run.finished' GROUP BY outcome ORDER BY runs DESC",
    "cost by workflow": "SELECT r.workflow AS workflow, count() AS runs, "
                        "round(sum(f.cost_usd), 4) AS cost_usd, "
                        "round(sum(f.cost_usd) / countIf(f.outcome = 'success'), 4) "
                        "AS cost_per_success_usd "
                        "FROM (SELECT run_id, workflow FROM events FINAL "
                        "WHERE event_type = 'run.started') AS r "
                        "INNER JOIN (SELECT run_id, outcome, "
                        "toFloat64(JSONExtractFloat(body, 'totals', 'cost_usd')) AS cost_usd "
                        "FROM events FINAL WHERE event_type = 'run.finished') AS f "
                        "USING run_id GROUP BY workflow ORDER BY workflow",
    "rejected input": "SELECT reason, count() AS messages FROM rejected_events FINAL "
                      "GROUP BY reason ORDER BY messages DESC",
}
