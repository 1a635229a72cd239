"""How a LangGraph thread paused on approvals is resumed (see :mod:`.langgraph`).

The resume value only names which request is resumed (``{"approval_id": ...}``): the
decision itself is read from the signed approval state the :class:`ApprovalFollower`
holds, so a forged ``Command(resume=...)`` approves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langgraph.types import Command

if TYPE_CHECKING:
    from agentledger.producers.approval_follower import ApprovalFollower

__all__ = ["approval_ids", "paused_on_approvals", "resume_again", "resume_command",
           "wait_for_decisions"]


def approval_ids(result: Mapping[str, Any]) -> list[str]:
    """The approval ids a paused graph's result (``graph.invoke``'s ``__interrupt__``)
    waits for; empty if the graph did not pause for approvers."""
    found = []
    for pending in result.get("__interrupt__", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, Mapping) and isinstance(value.get("approval_id"), str):
            found.append(value["approval_id"])
    return found



def paused_on_approvals(snapshot: Any) -> list[Any]:
    """The interrupts of a graph's state that wait for approvers (they name an approval)."""
    return [i for i in snapshot.interrupts
            if isinstance(i.value, Mapping) and "approval_id" in i.value]


def resume_command(paused: list[Any]) -> Command[Any]:
    """The resume: each paused interrupt gets the approval id it names (the decision
    itself is read from the signed approval state, never from here)."""
    if not paused:
        raise ValueError("the thread is not paused on an approval: nothing to resume")
    return Command(resume={i.id: {"approval_id": i.value["approval_id"]} for i in paused})


def resume_again(follower: ApprovalFollower | None, result: Mapping[str, Any],
                 asked: set[str], deadline: float) -> bool:
    """Whether to resume again: the graph paused next on requests that were already
    asked when the resume began, and they are decided or there is time to wait."""
    now = approval_ids(result)
    if not now or follower is None or not set(now) <= asked:
        return False
    return time.monotonic() < deadline or all(
        (state := follower.get(a)) is not None and state.final for a in now)


def wait_for_decisions(follower: ApprovalFollower | None, paused: list[Any],
                       wait_s: float) -> None:
    """Wait (up to ``wait_s`` in all) until every paused approval is decided."""
    if follower is None:
        return
    deadline = time.monotonic() + max(0.0, wait_s)
    for pending in paused:
        approval_id = pending.value["approval_id"]

        def decided(approval_id: str = approval_id) -> bool:
            state = follower.get(approval_id)
            return state is not None and state.final

        follower.wait_for(decided, max(0.0, deadline - time.monotonic()))
