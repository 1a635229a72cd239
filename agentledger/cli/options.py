"""Options several commands share, spelled the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
SinceOpt = Annotated[str | None, typer.Option(
    help="from: 7d, 24h, 30m (ago), or an ISO date/datetime (UTC)")]
UntilOpt = Annotated[str | None, typer.Option(help="to (exclusive): same forms as --since")]
TenantOpt = Annotated[str | None, typer.Option(help="only this tenant")]
