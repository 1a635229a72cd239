"""An agent process for the spool test: ``emit N`` spools N events (the broker may be
down) and waits to be killed; ``resume`` re-sends what an earlier process spooled."""

from __future__ import annotations

import sys
import time

from agentledger.producers.emitter import AgentIdentity, Ledger

IDENTITY = AgentIdentity(tenant="acme", agent="spool-bot", agent_version="1.0.0",
                         principal="svc-spool")


def main() -> None:
    command, bootstrap, spool_dir = sys.argv[1:4]
    ledger = Ledger.connect(bootstrap, IDENTITY, spool_dir=spool_dir)
    if command == "emit":
        events = int(sys.argv[4])
        for i in range(events // 5):  # five events per run
            with ledger.run("spool_test", inputs={"i": i}) as run:
                run.model_call(provider="openai", model="gpt-4o-mini", model_version="1",
                               role="planner", tokens_in=10,
                               tokens_out=5, latency_ms=1)
                with run.tool_call("zendesk", "get_ticket", mode="read", args={"i": i}) as c:
                    c.result("ok", latency_ms=1)
        print(f"spooled {ledger.sent}", flush=True)
        time.sleep(3600)  # killed by the test
    else:
        print(f"delivered {ledger.flush(120)}", flush=True)


if __name__ == "__main__":
    main()
