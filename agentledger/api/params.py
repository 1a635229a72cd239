"""Query and path parameters the routes share, and the time parameters' parsing.

Path and filter values look like the ledger's own names; anything else is a 422 before
it reaches a query (it would match nothing anyway: every value is a bound parameter).
"""

import datetime as dt
from typing import Annotated, Literal

from fastapi import Path, Query

from agentledger.queries.common import QueryError, parse_time
from agentledger.schemas.events import EVENT_TYPES

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$"
NameFilter = Annotated[str | None, Query(min_length=1, max_length=128)]
TimeParam = Annotated[str | None, Query(
    max_length=64, description="7d, 24h, 30m (ago), now, or an ISO date/datetime (UTC)")]
RunRef = Annotated[str, Path(pattern=ID_PATTERN, description="a run id or a trace id")]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Status = Literal["ok", "error", "timeout", "rejected"]
Outcome = Literal["success", "failure", "aborted", "rolled_back"]
ControlKind = Literal["breaker", "safe_mode", "budget", "override"]


def time_param(value: str | None, name: str) -> dt.datetime | None:
    """A time parameter's value; a 400 naming the parameter if it does not parse."""
    try:
        return parse_time(value)
    except QueryError as exc:
        raise QueryError(f"{name}: {exc}") from None
