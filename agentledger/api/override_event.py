"""A manual hold or release, also recorded as a ``human.override`` event with the key's name.

The override itself is a signed ``override`` signal on ``agent.control`` (what agents obey,
``details.by`` = the key's name). People reading an agent's history look for
``human.override`` events, and those belong to a run's hash chain, which a hold on an agent
does not have. So the API keeps one short run per hold or release, as the HTTP gate keeps
its gate runs: same tenant and agent, workflow :data:`WORKFLOW`, principal
:data:`PRINCIPAL`, holding ``run.started``, one ``human.override`` (who = the key's name,
what = the new state, why = the reason) and ``run.finished``; a chain of its own, so no
agent's chain is touched. Delivery: the event is acknowledged by Kafka before the route
answers (flush), so a hold that was answered is in the ledger.
"""

from __future__ import annotations

from agentledger import __version__
from agentledger.producers.emitter import DeliveryFailed, Ledger
from agentledger.producers.identity import AgentIdentity

WORKFLOW = "manual-override"
PRINCIPAL = "agentledger-api"


def record_override(bootstrap: str, security: dict[str, str] | None, *, tenant: str,
                    agent: str, who: str, state: str, why: str,
                    timeout_s: float = 15.0) -> str:
    """Record the override as a ``human.override`` event; its run id. Raises
    TimeoutError if Kafka did not acknowledge it in time."""
    ledger = Ledger.connect(bootstrap, AgentIdentity(
        tenant=tenant, agent=agent, agent_version=__version__, principal=PRINCIPAL),
        producer_overrides={"extra": security})
    with ledger.run(WORKFLOW) as run:
        run.human_override(who=who, what=f"safe mode override: {state}", why=why)
        run_id = run.run_id
    try:
        ledger.flush(timeout_s)
    except DeliveryFailed as exc:
        raise TimeoutError(f"the human.override event was not recorded: {exc}") from None
    return run_id
