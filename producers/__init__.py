"""The agent-side SDK: emit ledger events to Kafka from inside an agent runtime.

    ledger = Ledger.connect("127.0.0.1:9092", identity=AgentIdentity(...))
    with ledger.run(workflow="ticket_triage", ...) as run:
        run.model_call(provider="openai", model="gpt-4o", ...)
        with run.tool_call("crm", "update_ticket", mode="write", args={...}) as call:
            call.result("ok")
    ledger.flush()
"""

from agentledger.producers.context import RunContext, ToolCallContext
from agentledger.producers.emitter import BufferFull, DeliveryFailed, Ledger
from agentledger.producers.identity import AgentIdentity

__all__ = [
    "AgentIdentity",
    "BufferFull",
    "DeliveryFailed",
    "Ledger",
    "RunContext",
    "ToolCallContext",
]
