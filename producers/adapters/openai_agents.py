"""The OpenAI Agents SDK under the ledger: recorded, gated, paused for approvers, resumed.

Install with the extra: ``pip install 'agentledger[openai-agents]'`` (``openai-agents``);
the base SDK never imports this module.

- :class:`AgentsLedger` keeps one ledger run per Agents SDK run: ``await al.run(agent,
  input)`` starts it, and every :meth:`AgentsLedger.resume` of that run after an
  interruption continues the same ledger run, one hash chain.
- Model calls and the calls of tools that are *not* gated are recorded through the SDK's
  run hooks (:class:`LedgerRunHooks`, a ``RunHooks``), passed to ``Runner.run`` for you.
  Hooks rather than a tracing processor: they are called per run, in the run's own task,
  with the usage the model reported (``ModelResponse.usage``), so a model call lands on its
  run's chain in order; a tracing processor is process-wide and sees spans after the fact.
  Model calls are priced from the ledger's price table on the model's name (the agent's
  ``model`` string, a ``Model``'s ``model`` attribute, else ``model_name``).
- :meth:`AgentsLedger.guard_tool` wraps a ``FunctionTool`` so :class:`ToolGuard` decides
  before it runs (control loop, Cedar policy, approvals). The decision is taken in the
  tool's ``needs_approval`` callable, which the SDK asks before it invokes the tool:
  *allow* lets the SDK invoke it (recorded as ``tool.call`` / ``tool.result``); *deny* (the
  policy, an open breaker, safe mode, a budget) answers the model with a tool result naming
  the rule and the reason, and the tool is never invoked; *escalate* asks the approvers
  (``approval.requested``) and answers "needs approval", so the SDK interrupts the run
  (``result.interruptions``) with the approval id beside it (:func:`approval_ids`).
- :meth:`AgentsLedger.resume` waits for the approvers' decision (``ApprovalFollower``: the
  signed approval state, never anything the caller says), then approves or rejects the
  SDK's interruption (``RunState.approve`` / ``RunState.reject`` with the refusal as the
  message the model sees) and runs on from the state: an approved tool executes exactly
  once; a resume before the vote returns the run still paused and asks nobody again.

Exactly once: the wrapper remembers, per run and tool-call id, the approval it asked for
and the decision it took, so the SDK asking ``needs_approval`` again for the same call does
not ask the approvers again, and the tool is opened only with the context ``ToolGuard``
returned for that call. That memory, like ``ToolGuard``'s waiting requests, lives in this
process: a ``RunState`` serialised and resumed by another process asks again.

Delivery: events go through the run's :class:`~agentledger.producers.emitter.Ledger` (at
least once, deduplicated by event id in the sink). A run's hooks and tools run on its event
loop's thread, and each emit is synchronous, so tools the SDK runs concurrently keep one
chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    from agents import Agent, FunctionTool, RunHooks, Runner, ToolApprovalItem
    from agents.items import ModelResponse
    from agents.result import RunResult
    from agents.run_context import RunContextWrapper
    from agents.tool import maybe_invoke_function_tool_failure_error_function
    from agents.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agentledger.producers.adapters.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'agentledger[openai-agents]' (openai-agents)") from exc

from agentledger.producers.enforce import ApprovalExpired, ApprovalPending, ToolDenied

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext, ToolCallContext
    from agentledger.producers.emitter import Ledger
    from agentledger.producers.enforce import ToolGuard

__all__ = ["AgentRun", "AgentsLedger", "LedgerRunHooks", "approval_ids", "refusal_text"]

IdempotencyKey = Callable[[Mapping[str, Any]], str | None]


@dataclass
class _Session:
    """The ledger's side of one Agents SDK run (across its interruptions)."""

    run: RunContext
    agent: Agent[Any]
    """The agent the run started with (``Runner.run(agent, state)`` resumes from it)."""
    asked: dict[str, str] = field(default_factory=dict)
    """tool-call id → the approval id asked for it, until the SDK is told the decision."""
    ready: dict[str, ToolCallContext] = field(default_factory=dict)
    """tool-call id → the allowed call's context, opened when the SDK invokes the tool."""
    refused: dict[str, ToolDenied] = field(default_factory=dict)
    """tool-call id → the refusal the model gets instead of the tool's result."""
    open_tools: dict[str, ToolCallContext] = field(default_factory=dict)
    """tool-call id → ungated tool calls recorded by the hooks, until they end."""
    models: dict[str, float] = field(default_factory=dict)


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "agentledger_openai_agents_session", default=None)


@dataclass
class AgentRun:
    """One Agents SDK run under the ledger: the SDK's result and the ledger run."""

    result: RunResult
    run: RunContext
    approvals: dict[str, str]
    """tool-call id → approval id, for the interruptions this run is paused on."""
    _session: _Session = field(repr=False)

    @property
    def paused(self) -> bool:
        """True while the run waits for approvers (``result.interruptions``)."""
        return bool(self.result.interruptions)

    @property
    def approval_ids(self) -> list[str]:
        return list(self.approvals.values())

    @property
    def final_output(self) -> Any:
        return self.result.final_output


def approval_ids(paused: AgentRun) -> list[str]:
    """The approval ids a paused run waits for; empty if it did not pause for approvers."""
    return paused.approval_ids


def refusal_text(tool: str, action: str, refused: ToolDenied) -> str:
    """What the model reads instead of the tool's result: the rule, the reason and what to
    do, so it can tell the user or choose another action (never an exception)."""
    reason = refused.reason or refused.rule
    if isinstance(refused, ApprovalExpired) and refused.outcome == "aborted":
        advice = "The run was aborted: stop and tell the user."
    else:
        advice = "Do not retry the same call; tell the user or choose another action."
    return (f"Refused by agentledger before {tool}:{action} ran. rule: {refused.rule}. "
            f"reason: {reason}. {advice}")


@dataclass(frozen=True)
class _Gated:
    """How a wrapped tool maps onto the catalog."""

    inner: FunctionTool
    catalog_tool: str
    catalog_action: str
    declared_mode: str
    key_of: IdempotencyKey | None


class AgentsLedger:
    """One agent's Agents SDK runs under the ledger: ``al.guard_tool(tool)`` for the tools,
    ``await al.run(agent, input)`` and ``await al.resume(paused)`` to run."""

    def __init__(self, ledger: Ledger, guard: ToolGuard, *, workflow: str,
                 role: str = "agent", provider: str = "openai",
                 model_name: str | None = None,
                 run_kwargs: Mapping[str, Any] | None = None):
        """``workflow`` names the runs; ``role`` is the model calls' role; ``provider`` and
        ``model_name`` price a model whose name the agent does not say (a custom ``Model``);
        ``run_kwargs`` go to every :meth:`Ledger.run` (budget, prompt version,
        ``on_behalf_of``)."""
        self.ledger = ledger
        self.guard = guard
        self.workflow = workflow
        self.role = role
        self.provider = provider
        self.model_name = model_name
        self.run_kwargs = dict(run_kwargs or {})
        self.gated: dict[str, _Gated] = {}

    # -- runs ---------------------------------------------------------------------------

    async def run(self, agent: Agent[Any], input: Any, **runner_kwargs: Any
                  ) -> AgentRun:
        """``Runner.run(agent, input)`` in a new ledger run (``run.started``). The run
        finishes when the agent ends (``success``) or raises (``failure``, re-raised); a run
        paused on approvals keeps its ledger run open for :meth:`resume`."""
        run = self.ledger.run(self.workflow, inputs=_jsonable(input), **self.run_kwargs)
        run.__enter__()
        return await self._drive(_Session(run, agent), agent, input, runner_kwargs)

    async def resume(self, paused: AgentRun, *, wait_s: float = 60.0,
                     **runner_kwargs: Any) -> AgentRun:
        """Wait up to ``wait_s`` for the approvers of every approval ``paused`` waits for,
        tell the SDK each decision (approve, or reject with the refusal the model reads)
        and run on from the state. Nothing decided yet: ``paused`` is returned as it is."""
        session = paused._session
        if not paused.paused:
            return paused
        follower = self.guard.approvals
        deadline = time.monotonic() + wait_s
        if follower is not None:
            for approval_id in paused.approvals.values():
                def decided(approval_id: str = approval_id) -> bool:
                    state = follower.get(approval_id)
                    return state is not None and state.final

                budget = max(0.0, deadline - time.monotonic())
                if not decided() and budget > 0:
                    await asyncio.to_thread(follower.wait_for, decided, budget)
        state = paused.result.to_state()
        told = 0
        for item in paused.result.interruptions:
            call_id = _call_id(item)
            asked_id = session.asked.get(call_id) if call_id else None
            if call_id is None or asked_id is None:
                continue  # someone else's approval (needs_approval=True on an ungated tool)
            try:
                session.ready[call_id] = self.guard.resume(session.run, asked_id)
            except ApprovalPending:
                continue  # undecided: the SDK is asked again, and it pauses again
            except ToolDenied as refused:
                gated = self.gated.get(item.tool_name or "")
                text = refusal_text(gated.catalog_tool if gated else item.tool_name or "",
                                    gated.catalog_action if gated else "", refused)
                state.reject(item, rejection_message=text)
            except KeyError:
                state.reject(item, rejection_message=refusal_text(
                    item.tool_name or "", "", ToolDenied(
                        "approval_lost", f"approval {asked_id} is not waiting in this "
                        "process (restarted?): call the tool again to ask anew")))
            else:
                state.approve(item)
            del session.asked[call_id]
            told += 1
        if not told:
            return paused
        return await self._drive(session, session.agent, state, runner_kwargs)

    def run_sync(self, agent: Agent[Any], input: Any, **runner_kwargs: Any
                 ) -> AgentRun:
        """:meth:`run` from synchronous code (its own event loop)."""
        return asyncio.run(self.run(agent, input, **runner_kwargs))

    def resume_sync(self, paused: AgentRun, *, wait_s: float = 60.0,
                    **runner_kwargs: Any) -> AgentRun:
        """:meth:`resume` from synchronous code (its own event loop)."""
        return asyncio.run(self.resume(paused, wait_s=wait_s, **runner_kwargs))

    @contextlib.contextmanager
    def bind(self, run: RunContext, agent: Agent[Any] | None = None) -> Iterator[None]:
        """Gated tools invoked in this block (your own tests of a tool, a bench) record and
        decide on ``run``, as inside :meth:`run`; the run is not started or finished here."""
        token = _SESSION.set(_Session(run, agent or Agent(name="bound")))
        try:
            yield
        finally:
            _SESSION.reset(token)

    async def _drive(self, session: _Session, agent: Agent[Any], start: Any,
                     runner_kwargs: dict[str, Any]) -> AgentRun:
        hooks = LedgerRunHooks(self, session, runner_kwargs.pop("hooks", None))
        token = _SESSION.set(session)
        try:
            result = await Runner.run(agent, start, hooks=hooks, **runner_kwargs)
        except BaseException as exc:
            self.finish(session, "failure", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _SESSION.reset(token)
        approvals = {}
        for item in result.interruptions:
            call_id = _call_id(item)
            if call_id is not None and call_id in session.asked:
                approvals[call_id] = session.asked[call_id]
        if not result.interruptions:
            self.finish(session)
        return AgentRun(result, session.run, approvals, session)

    @staticmethod
    def finish(session: _Session, outcome: str = "success", error: str | None = None
               ) -> None:
        """Finish the run (``run.finished``) unless the guard did (an aborted approval)."""
        run = session.run
        if not run.finished:
            run.finish(outcome, error=error)
        run.__exit__(None, None, None)

    # -- tools --------------------------------------------------------------------------

    def guard_tool(self, tool: FunctionTool, *, tool_name: str | None = None,
                   action: str | None = None, mode: str = "write",
                   idempotency_key: IdempotencyKey | None = None) -> FunctionTool:
        """``tool``, gated: the catalog's ``tool_name:action`` (default: the tool's name for
        both) is decided by the guard before every call. ``mode`` is what you declare; the
        catalog's mode wins. ``idempotency_key`` makes the call's key from its arguments
        (default: the SDK's tool-call id). The model sees the same name, description and
        schema; the tool must not set ``needs_approval`` itself (the guard decides)."""
        gated = _Gated(tool, tool_name or tool.name, action or tool.name, mode,
                       idempotency_key)
        self.gated[tool.name] = gated

        async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any],
                                 call_id: str) -> bool:
            return self._decide(gated, params, call_id)

        async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
            return await self._invoke(gated, ctx, arguments)

        return dataclasses.replace(tool, needs_approval=needs_approval,
                                   on_invoke_tool=invoke)

    def _decide(self, gated: _Gated, params: Mapping[str, Any], call_id: str) -> bool:
        """The guard's decision for one call, kept for :meth:`_invoke`; True (the SDK
        interrupts the run) only while approvers are asked."""
        session = _SESSION.get()
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
            session.ready[call_id] = self.guard.call(
                run, gated.catalog_tool, gated.catalog_action, mode=gated.declared_mode,
                args=params, idempotency_key=key)
        except ApprovalPending as pending:
            session.asked[call_id] = pending.approval_id
            return True
        except ToolDenied as refused:
            session.refused[call_id] = refused
        return False

    async def _invoke(self, gated: _Gated, ctx: ToolContext[Any], arguments: str) -> Any:
        """Invoke the wrapped tool in the call's context, or answer with the refusal."""
        session = _SESSION.get()
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
                self._decide(gated, json.loads(arguments or "{}"), call_id)
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


class LedgerRunHooks(RunHooks[Any]):
    """Records one Agents SDK run's model calls and ungated tool calls on its ledger run.

    Model calls are priced by the ledger's price table from the usage the model reports
    (``ModelResponse.usage``: input, output and cached tokens). Gated tools are recorded by
    the wrapper (with their decision), so the hooks skip them. Hooks of your own
    (``hooks=`` to :meth:`AgentsLedger.run`) are called after the ledger's.
    """

    def __init__(self, adapter: AgentsLedger, session: _Session,
                 inner: RunHooks[Any] | None = None):
        self.adapter = adapter
        self.session = session
        self.inner = inner

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_end(context, agent, output)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_handoff(context, from_agent, to_agent)

    async def on_llm_start(self, context: RunContextWrapper[Any], agent: Agent[Any],
                           system_prompt: str | None, input_items: list[Any]) -> None:
        self.session.models[agent.name] = time.perf_counter()
        if self.inner is not None:
            await self.inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any],
                         response: ModelResponse) -> None:
        if self.inner is not None:
            await self.inner.on_llm_end(context, agent, response)
        run = self.session.run
        t0 = self.session.models.pop(agent.name, None)
        if run.finished:
            return
        usage = response.usage
        details = getattr(usage, "input_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        model = self._model_name(agent)
        run.model_call(provider=self.adapter.provider, model=model, model_version=model,
                       role=self.adapter.role, tokens_in=int(usage.input_tokens),
                       tokens_out=int(usage.output_tokens), cached_tokens=cached,
                       latency_ms=round((time.perf_counter() - t0) * 1000, 3) if t0 else 0.0)

    def _model_name(self, agent: Agent[Any]) -> str:
        model = agent.model
        if isinstance(model, str):
            return model
        named = getattr(model, "model", None)
        if isinstance(named, str):
            return named
        return self.adapter.model_name or "unknown"

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Any,
                            tool: Any) -> None:
        if self.inner is not None:
            await self.inner.on_tool_start(context, agent, tool)
        call_id = getattr(context, "tool_call_id", None)
        name = getattr(tool, "name", "tool")
        run = self.session.run
        if call_id is None or name in self.adapter.gated or run.finished:
            return
        try:
            args = json.loads(getattr(context, "tool_arguments", "") or "{}")
        except json.JSONDecodeError:
            args = {"input": getattr(context, "tool_arguments", "")}
        mode = self.adapter.guard.mode_of(name, name, "read")
        call = run.tool_call(name, name, mode=mode,
                             args=args if isinstance(args, dict) else {"input": args})
        call.__enter__()
        self.session.open_tools[call_id] = call

    async def on_tool_end(self, context: RunContextWrapper[Any], agent: Any, tool: Any,
                          result: object) -> None:
        if self.inner is not None:
            await self.inner.on_tool_end(context, agent, tool, result)
        call_id = getattr(context, "tool_call_id", None)
        call = self.session.open_tools.pop(call_id, None) if call_id else None
        if call is not None:
            call.__exit__(None, None, None)


def _call_id(item: ToolApprovalItem) -> str | None:
    call_id = getattr(item.raw_item, "call_id", None)
    if call_id is None and isinstance(item.raw_item, Mapping):
        call_id = item.raw_item.get("call_id")
    return call_id if isinstance(call_id, str) else None


def _jsonable(value: Any) -> Any:
    """The run's input as the ledger hashes it (``inputs_hash``): JSON-able, else its text."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
