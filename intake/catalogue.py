"""The per-tenant tool catalogue: is a tool a read or a write, when its span does not say.

Safe mode lets reads through and stops writes, so an OTel-fed tool call needs a mode.
The span's ``agentledger.tool.mode`` attribute wins; otherwise the control policy file's
top-level ``tool_catalogue:`` key answers::

    tool_catalogue:
      acme:            # tenant
        kb_search: read
        stripe: write
      "*":             # every tenant, after the tenant's own entries
        web_search: read

A tool known to neither is treated as a ``write``: an unknown side effect must not slip
through safe mode. This loader reads only that key, so it does not depend on (or
validate) the rest of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import yaml

Mode = Literal["read", "write"]
MODES: Final = ("read", "write")
ANY_TENANT: Final = "*"
DEFAULT_MODE: Final[Mode] = "write"


class CatalogueError(ValueError):
    """The ``tool_catalogue`` key is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class ToolCatalogue:
    tools: dict[str, dict[str, Mode]] = field(default_factory=dict)

    def mode(self, tenant: str, tool: str) -> Mode | None:
        """The catalogued mode of ``tool`` for ``tenant`` (tenant entry, then ``*``)."""
        for scope in (tenant, ANY_TENANT):
            found = self.tools.get(scope, {}).get(tool)
            if found is not None:
                return found
        return None


def parse_catalogue(document: object, source: str = "<policy>") -> ToolCatalogue:
    if not isinstance(document, dict):
        return ToolCatalogue()
    raw = document.get("tool_catalogue")
    if raw is None:
        return ToolCatalogue()
    if not isinstance(raw, dict):
        raise CatalogueError(f"{source}: tool_catalogue must map tenant → tool → read|write")
    tools: dict[str, dict[str, Mode]] = {}
    for tenant, entries in raw.items():
        if not isinstance(entries, dict):
            raise CatalogueError(f"{source}: tool_catalogue.{tenant} must map tool → read|write")
        for tool, mode in entries.items():
            if mode not in MODES:
                raise CatalogueError(f"{source}: tool_catalogue.{tenant}.{tool}: {mode!r} "
                                     "is not 'read' or 'write'")
            tools.setdefault(str(tenant), {})[str(tool)] = mode
    return ToolCatalogue(tools)


def load_catalogue(path: str | Path | None) -> ToolCatalogue:
    """The catalogue of the policy file at ``path`` (empty without a file or the key)."""
    if path is None:
        return ToolCatalogue()
    p = Path(path)
    try:
        document = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CatalogueError(f"{p}: cannot read policy file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{p}: not valid YAML: {exc}") from None
    return parse_catalogue(document, str(p))
