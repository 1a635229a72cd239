"""How a gated ``FunctionTool`` is decided and invoked (see
:meth:`agentledger.producers.adapters.openai_agents.AgentsLedger.guard_tool`).

The decision is taken in the tool's ``needs_approval`` callable (:func:`decide_gated`),
kept in the run's session, and used when the SDK invokes the tool (:func:`invoke_gated`):
the allowed call's context is opened then, a refusal is answered as text the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents import FunctionTool
from agents.tool import maybe_invoke_function_tool_failure_error_function
from agents.tool_context import ToolContext

from agentledger.producers.adapters.openai_agents_session import CURRENT_SESSION, refusal_text
from agentledger.producers.enforce import ApprovalPending, ToolDenied

if TYPE_CHECKING:
    from agentledger.producers.enforce import ToolGuard

__all__ = ["GatedTool", "IdempotencyKey", "decide_gated", "invoke_gated"]

IdempotencyKey = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class GatedTool:
    """How a wrapped tool maps onto the catalog."""

    inner: FunctionTool
    catalog_tool: str
    catalog_action: str
    declared_mode: str
    key_of: IdempotencyKey | None


def decide_gated(guard: ToolGuard, gated: GatedTool, params: Mapping[str, Any],
                 call_id: str) -> bool:
    """The guard's decision for one call, kept in the session for :func:`invoke_gated`;
    True (the SDK interrupts the run) only while approvers are asked."""
    session = CURRENT_SESSION.get()
    if session is None:
        raise RuntimeError("a gated tool runs inside AgentsLedger.run/resume")
    if call_id in session.asked:
        return True  # asked already: the SDK pauses again, nobody is asked twice
    if call_id in session.ready or call_id in session.refused:
        return False
    run = session.run
    if run.finished:
        session.refused[call_id] = ToolDenied(
            "run_finished", f"run {run.run_id} is {run.outcome}: no more tool calls")
        return False
    key = gated.key_of(params) if gated.key_of is not None else call_id
    try:
        session.ready[call_id] = guard.call(
            run, gated.catalog_tool, gated.catalog_action, mode=gated.declared_mode,
            args=params, idempotency_key=key)
    except ApprovalPending as pending:
        session.asked[call_id] = pending.approval_id
        return True
    except ToolDenied as refused:
        session.refused[call_id] = refused
    return False


async def invoke_gated(guard: ToolGuard, gated: GatedTool, ctx: ToolContext[Any],
                       arguments: str) -> Any:
    """Invoke the wrapped tool in the call's context, or answer with the refusal."""
    session = CURRENT_SESSION.get()
    call_id = ctx.tool_call_id
    if session is None:
        raise RuntimeError("a gated tool runs inside AgentsLedger.run/resume")
    call = session.ready.pop(call_id, None)
    refused = session.refused.pop(call_id, None)
    if call is None and refused is None:
        # the SDK did not ask needs_approval (an "always approve" on the run): decide now;
        # an escalation cannot pause from here, so it is refused and the model may ask
        # again
        try:
            decide_gated(guard, gated, json.loads(arguments or "{}"), call_id)
        except json.JSONDecodeError:
            refused = ToolDenied("bad_arguments", "the arguments are not JSON")
        call = session.ready.pop(call_id, None)
        refused = refused or session.refused.pop(call_id, None)
        if call_id in session.asked:
            refused = ToolDenied("approval_required", f"approval "
                                 f"{session.asked.pop(call_id)} was asked; the run "
                                 "could not pause here, call the tool again")
    if call is None:
        assert refused is not None
        return refusal_text(gated.catalog_tool, gated.catalog_action, refused)
    call.__enter__()
    invoker = gated.inner.on_invoke_tool
    # A decorated tool's invoker turns the function's exception into a message for the
    # model; call what it wraps instead, so the error is recorded (status=error, which
    # breakers count) before the SDK's own handler formats it, as the invoker would.
    impl = getattr(invoker, "_invoke_tool_impl", None)
    try:
        out = await (impl or invoker)(ctx, arguments)
    except BaseException as exc:
        call.__exit__(type(exc), exc, exc.__traceback__)
        if impl is None or not isinstance(exc, Exception):
            raise
        message = await maybe_invoke_function_tool_failure_error_function(
            function_tool=gated.inner, context=ctx, error=exc)
        if message is None:
            raise
        handled = getattr(invoker, "_on_handled_error", None)
        if handled is not None:
            handled(gated.inner, exc, arguments, ctx)
        return message
    call.__exit__(None, None, None)
    return out
