"""``POST /v1/approvals/{id}/assign``: delegate a request to a named approver or reassign
it to another queue, recorded in its signed state, through the JSON API (the console's
inbox form calls the same function). A real agent waits on the request throughout."""

from __future__ import annotations

import pytest

from tests.console.stack import ConsoleStack, pending_for
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_delegation_and_reassignment_are_recorded_and_decide_who_may_vote(
        stack: ConsoleStack) -> None:
    agent = stack.refund(450)
    request = wait_for(lambda: pending_for(stack, agent.run_id or ""), 60, interval_s=0.3,
                       what="the refund's approval request")
    aid = request["approval_id"]
    path = f"/v1/approvals/{aid}"

    assert stack.call("POST", f"{path}/approve", "carol", json={"reason": "x"}).status_code \
        == 403, "carol (legal) may not vote on a finance request before it is handed to her"
    both = stack.call("POST", f"{path}/assign", "ana",
                      json={"to_role": "legal", "to_approver": "carol@legal", "reason": "x"})
    assert both.status_code == 422
    assert stack.call("POST", f"{path}/assign", "ana", json={"to_role": "legal"}
                      ).status_code == 422, "a reason is required"
    assert stack.call("POST", f"{path}/assign", "globex",
                      json={"to_role": "legal", "reason": "x"}).status_code == 404
    own = stack.call("POST", f"{path}/assign", "bot", json={"to_role": "legal", "reason": "x"})
    assert own.status_code == 403 and "own agent" in own.text

    delegated = stack.call("POST", f"{path}/assign", "ana",
                           json={"to_approver": "carol@legal", "reason": "ana is away"})
    assert delegated.status_code == 200, delegated.text
    assert delegated.json()["delegates"] == ["carol@legal"]
    voted = stack.call("POST", f"{path}/approve", "carol", json={"reason": "checked"})
    assert voted.status_code == 200, voted.text
    assert (voted.json()["status"], voted.json()["approved_by"]) == ("pending", ["carol@legal"])

    moved = stack.call("POST", f"{path}/assign", "ben",
                       json={"to_role": "legal", "reason": "legal owns this customer"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["queue"], moved.json()["requested_queue"]) == ("legal", "finance")
    refused = stack.call("POST", f"{path}/approve", "ben", json={"reason": "mine now?"})
    assert refused.status_code == 403 and "legal" in refused.text
    assert not agent.proceeded.is_set()

    final = stack.call("POST", f"{path}/approve", "lee", json={"reason": "legal agrees"})
    assert final.status_code == 200 and final.json()["status"] == "approved", final.text
    assert agent.proceeded.wait(30), "the agent did not proceed after the final vote"
    agent.join(60)
    assert agent.outcome == "success", agent.error

    shown = stack.call("GET", path, "ana").json()
    assert [(a["by"], a["to_approver"], a["to_role"], a["reason"])
            for a in shown["assignments"]] == [
        ("ana@finance", "carol@legal", None, "ana is away"),
        ("ben@finance", None, "legal", "legal owns this customer")]
    late = stack.call("POST", f"{path}/assign", "lee", json={"to_role": "finance",
                                                             "reason": "x"})
    assert late.status_code == 409 and "approved already" in late.text
