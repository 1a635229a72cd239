"""The audit export, one page per request: JSONL of the stored events or Parquet."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from agentledger.api.deps import Caller, Store
from agentledger.api.params import NameFilter, TimeParam, time_param
from agentledger.api.responses import OrjsonResponse
from agentledger.queries import audit_export

router = APIRouter(default_response_class=OrjsonResponse)


@router.get("/v1/export", summary="one page of an audit export (JSONL of raw, or Parquet)",
            responses={200: {"content": {"application/x-ndjson": {},
                                         "application/vnd.apache.parquet": {}}}})
def export_events(
    caller: Caller, client: Store, since: TimeParam = None, until: TimeParam = None,
    tenant: NameFilter = None, format: Literal["jsonl", "parquet"] = "jsonl",
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=audit_export.MAX_EXPORT_PAGE)] = 50_000,
) -> Response:
    page = audit_export.export_page(client, caller, since=time_param(since, "since"),
                              until=time_param(until, "until"), fmt=format, tenant=tenant,
                              cursor=cursor, limit=limit)
    headers = {"X-Export-Rows": str(page.rows)}
    if page.next_cursor:
        headers["X-Next-Cursor"] = page.next_cursor
    if page.total is not None:
        headers["X-Export-Total"] = str(page.total)
    media = "application/x-ndjson" if format == "jsonl" else "application/vnd.apache.parquet"
    return Response(page.data, media_type=media, headers=headers)
