"""The policy a guard enforces, loaded or the reason it is not, and the pure decision on it.

A policy that does not load does not crash the agent: :func:`load_gate` returns the
:class:`PolicyError`, and a guard built on it fails closed for writes (reads go on), taking
modes from a catalog (:func:`modes_without_policy`), never from the caller.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentledger.producers.gate import DEFAULT_DIR, Decision, Gate, PolicyError
from agentledger.producers.tool_policy_files import Catalog, load_catalog

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["POLICY_UNAVAILABLE", "decide_call", "load_gate", "modes_without_policy"]

POLICY_UNAVAILABLE = "policy_unavailable"


def load_gate(directory: Path | str | None = None) -> Gate | PolicyError:
    """The gate, or the reason it could not be loaded (a guard built on that fails closed
    for writes instead of crashing the agent)."""
    try:
        return Gate.load(directory)
    except PolicyError as exc:
        root = Path(directory) if directory is not None else DEFAULT_DIR
        with contextlib.suppress(PolicyError):  # else: the packaged catalog's modes
            exc.catalog = load_catalog(root / "catalog.yaml")
        return exc


def modes_without_policy(error: PolicyError) -> dict[str, str]:
    """``"tool:action"`` → mode, for a guard whose policy did not load: the failed
    directory's catalog if it loaded, else the packaged default catalog (else none: every
    call is then taken for a write and refused)."""
    catalog: Catalog | None = error.catalog
    if catalog is None:
        try:
            catalog = load_catalog(DEFAULT_DIR / "catalog.yaml")
        except PolicyError:
            return {}
    return {uid: spec.mode for uid, spec in catalog.actions.items()}


def decide_call(gate: Gate | PolicyError, *, tenant: str, agent: str, tool: str,
                action: str, args: Mapping[str, Any], idempotency_key: str | None = None,
                resource_tenant: str | None = None, approvals: int = 0) -> Decision:
    """The policy's answer for one call of ``tenant/agent`` on redacted ``args``: pure (no
    run, no recording), so the SDK's guard and the HTTP gate decide with the same code.
    Without a loaded policy it is a deny naming why (the caller lets reads through)."""
    if isinstance(gate, PolicyError):
        return Decision("deny", POLICY_UNAVAILABLE,
                        f"policy not loaded: {gate}; {tool}:{action} is a write "
                        f"or not in the catalog, and writes are refused until it loads",
                        "unloaded", "unloaded")
    return gate.decide(tenant=tenant, agent=agent, tool=tool, action=action, args=args,
                       idempotency_key=idempotency_key, resource_tenant=resource_tenant,
                       approvals=approvals)

