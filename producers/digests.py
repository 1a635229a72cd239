"""The SDK's two digests: of a JSON value (sorted keys, orjson's forms) and of bytes.

Used for ``inputs_hash``, ``args_hash``, ``schema_hash`` and the like: fingerprints for
matching and deduplication, not the hash chain (that is :mod:`agentledger.schemas.integrity`,
in its versioned canonical form).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def sha256_json(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sha256_bytes(value: bytes | str) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()
