"""``agentledger export``: the audit export of events, JSONL or Parquet, page by page."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentledger.cli import connect
from agentledger.cli.options import SinceOpt, TenantOpt, UntilOpt
from agentledger.cli.render import UserError, err


def export(
    output: Annotated[str, typer.Option("--output", "-o", help="file to write")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (exact events) or parquet")]
    = "jsonl",
    page_rows: Annotated[int, typer.Option(min=1, max=100_000, help="rows per request")]
    = 50_000,
) -> None:
    """Audit export of events in a time range: JSONL of the exact stored events (their hash
    chain verifies) or Parquet of every column. Shows progress; safe to re-run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if fmt not in ("jsonl", "parquet"):
        raise UserError(f"--format must be jsonl or parquet, not {fmt!r}")
    written = 0
    with connect.ledger() as ledger, Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=err, transient=True) as progress:
        task = progress.add_task("exporting", total=None)
        cursor = None
        writer = None
        handle = open(output, "wb")  # noqa: SIM115 - closed in finally with the writer
        try:
            while True:
                response = ledger.raw("/v1/export", since=since, until=until, tenant=tenant,
                                      format=fmt, cursor=cursor, limit=page_rows)
                if "X-Export-Total" in response.headers:
                    progress.update(task, total=int(response.headers["X-Export-Total"]))
                rows = int(response.headers.get("X-Export-Rows", "0"))
                if rows and fmt == "jsonl":
                    handle.write(response.content)
                elif rows:
                    writer = _append_parquet(writer, handle, response.content)
                written += rows
                progress.update(task, completed=written)
                cursor = response.headers.get("X-Next-Cursor")
                if not cursor:
                    break
        finally:
            if writer is not None:
                writer.close()
            handle.close()
    err.print(f"wrote {written} events to {output} ({fmt})", highlight=False)


def _append_parquet(writer: Any, handle: Any, page: bytes) -> Any:
    """Add one page (a Parquet document from ClickHouse) to the output file."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(page))
    if writer is None:
        writer = pq.ParquetWriter(handle, table.schema, compression="zstd")
    writer.write_table(table)
    return writer
