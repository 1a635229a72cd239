"""``ask_user_to_confirm``: the control loop's refusal turned into a question to the run's
end user (see :mod:`agentledger.producers.enforce`).

When the control loop refuses with that fallback (a run over its budget) and the run acts
for an end user (``on_behalf_of``), an approval is requested in that user's queue
(``user:<on_behalf_of>``, one vote, expiry from the catalog's ``confirm`` section).
Confirmed, the call goes on to the policy; declined, it is refused (``user_declined``) and
the run finishes ``aborted``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agentledger.producers.gate import GUARD_POLICY_ID, Decision, Gate, PolicyError
from agentledger.producers.tool_policy_files import USER_QUEUE_PREFIX, Queue

if TYPE_CHECKING:
    from agentledger.producers.context import RunContext

__all__ = ["ASK_USER", "DEFAULT_CONFIRM", "USER_DECLINED", "confirm_decision", "user_queue"]

ASK_USER = "ask_user_to_confirm"
"""The control loop's fallback (a budget's) that asks the run's end user instead of refusing."""
USER_DECLINED = "user_declined"
DEFAULT_CONFIRM = Queue(USER_QUEUE_PREFIX, 300.0, 900.0, "abort")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$")
"""A queue name as events and the approvals API take it."""


def user_queue(run: RunContext) -> str | None:
    """The queue of the end user ``run`` acts for (``user:<on_behalf_of>``), or None
    when it acts for nobody (or a name no queue can carry)."""
    who = run.on_behalf_of
    if not who:
        return None
    queue = f"{USER_QUEUE_PREFIX}{who}"
    return queue if QUEUE_NAME.match(queue) else None


def confirm_decision(gate: Gate | PolicyError, run: RunContext, *, rule: str, reason: str,
                     policy_version: str) -> Decision:
    """The escalation that asks the run's end user to confirm what the control loop
    refused (its ``rule``, ``reason`` and ``policy_version``): their queue, one vote, SLA
    and expiry from the catalog's ``confirm`` section."""
    queue_name = user_queue(run) or USER_QUEUE_PREFIX
    base = gate.catalog.confirm if isinstance(gate, Gate) else DEFAULT_CONFIRM
    queue = Queue(queue_name, base.sla_s, base.expires_in_s, base.on_expiry)
    asking = f"{rule}: {reason}; asking {run.on_behalf_of} to confirm"
    return Decision("escalate", ASK_USER, asking[:4096], GUARD_POLICY_ID,
                    policy_version or "control", 1, queue_name, queue)
