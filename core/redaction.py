"""Redaction of secrets from tool arguments, before anything leaves the agent.

A key is secret when its lowercased name contains a configured word ("password" covers
"db_password"). String values are also scanned for credential shapes (bearer tokens,
provider API keys, private-key blocks), because secrets travel in free text too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

_VALUE_PATTERNS = re.compile(
    r"(?i:bearer\s+[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)


class Redactor:
    def __init__(self, keys: Iterable[str]):
        self._words = tuple(k.lower() for k in keys if k)

    def _secret_key(self, key: str) -> bool:
        lowered = key.lower()
        return any(word in lowered for word in self._words)

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secret keys and secret-shaped strings replaced."""
        if isinstance(value, dict):
            return {
                k: (REDACTED if self._secret_key(str(k)) else self.redact(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        if isinstance(value, str):
            return _VALUE_PATTERNS.sub(REDACTED, value)
        return value
