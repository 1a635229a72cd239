"""The API's JSON: orjson, with stored values encoded as :mod:`agentledger.json_encoding` says."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from agentledger.json_encoding import json_default


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=json_default, option=orjson.OPT_NON_STR_KEYS)
