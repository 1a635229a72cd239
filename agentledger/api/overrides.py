"""``POST /v1/control/overrides``: a manual safe-mode hold or release, made by a key.

Before this route the CLI produced overrides straight to ``agent.control`` with
``by=$USER``: anyone who could reach Kafka and read the ledger key's file could hold or
release an agent under any name. Now an operator key asks the API, the override is
recorded with that key's *name* as ``by`` (the name ``keys list`` shows, which revoking
the key kills) and a required reason, and the API signs it with the ledger's key
(``<data_dir>/keys`` or ``AGENTLEDGER_LEDGER_KEY_DIR``), as the approvals desk signs
approval states. Followers verify that signature as before, so nothing downstream changes.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, Field

from agentledger.api.deps import Operator, bootstrap_of
from agentledger.api.responses import OrjsonResponse
from agentledger.auth import Principal
from agentledger.schemas.events import ScopeName

router = APIRouter(default_response_class=OrjsonResponse, tags=["control"])

STATES: dict[str, str] = {"read_only": "read_only", "halted": "halted", "normal": "normal",
                          "clear": "cleared", "cleared": "cleared"}
"""What a caller may ask for → the override signal's state. ``normal`` pins the agent to
normal whatever the rules decide; ``clear`` removes the override (the rules apply again)."""


def _reason(value: str) -> str:
    if not value.strip():
        raise ValueError("a reason is required: say why, it is kept in the ledger")
    return value


class OverrideRequest(BaseModel):
    tenant: ScopeName
    agent: ScopeName
    state: Literal["read_only", "halted", "normal", "clear", "cleared"] = Field(
        description="read_only or halted: hold the agent there; normal: pin it normal; "
                    "clear: remove the override")
    reason: Annotated[str, AfterValidator(_reason)] = Field(
        min_length=1, max_length=2048, description="why; kept with the override")


def _publish(request: Request, body: OverrideRequest, who: Principal) -> dict[str, Any]:
    from agentledger.api.override_event import record_override
    from agentledger.core import signing
    from agentledger.producers.overrides import publish_override

    settings, bootstrap = bootstrap_of(request.app)
    scope = f"{body.tenant}/{body.agent}"
    try:
        signal = publish_override(bootstrap, scope, STATES[body.state], body.reason,
                                  by=who.name, key=signing.ledger_key(settings),
                                  security=settings.kafka_security)
        # and as a human.override event with the key's name (agentledger/api/override_event.py)
        run_id = record_override(bootstrap, settings.kafka_security, tenant=body.tenant,
                                 agent=body.agent, who=who.name, state=signal.state,
                                 why=body.reason)
    except TimeoutError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    return {"key": signal.key, "scope": scope, "state": signal.state,
            "version": signal.version, "reason": signal.reason, "by": who.name,
            "run_id": run_id}


@router.post("/v1/control/overrides", summary="hold an agent in read_only or halted, pin it "
                                               "normal, or clear the hold (operator key)")
async def create_override(body: OverrideRequest, request: Request, who: Operator) -> Any:
    return await run_in_threadpool(_publish, request, body, who)
