// An agent in another language (Node 20: its built-in test runner and plain fetch) under
// the ledger's control plane: it asks POST /v1/gate/check before a refund over the
// threshold, is told to wait for two finance approvers, long-polls
// GET /v1/approvals/{id}?wait=30 while two approver keys vote through the API, then asks
// again with the approval id (the policy, told two approvers approved, allows) and runs
// the refund.
//
// Run by tests/shell/test_tool_gate.py, which starts the stack and passes
// GATE_API_URL, GATE_AGENT_KEY (bound to acme/refund-agent) and GATE_APPROVER_KEYS.
import { test } from 'node:test';
import assert from 'node:assert/strict';

const url = process.env.GATE_API_URL;
const agentKey = process.env.GATE_AGENT_KEY;
const approvers = (process.env.GATE_APPROVER_KEYS || '').split(',').filter(Boolean);
const DEADLINE_MS = 120_000;

async function api(method, path, key, body) {
  const res = await fetch(url + path, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

// A vote is taken once the request has reached the store (the sink lands it): until then
// the approvals API answers 404. Retried against a deadline, never a fixed pause.
async function vote(approvalId, key) {
  const until = Date.now() + DEADLINE_MS;
  for (;;) {
    const res = await api('POST', `/v1/approvals/${approvalId}/approve`, key,
      { reason: 'checked the charge' });
    if (res.status !== 404 || Date.now() > until) return res;
    await api('GET', `/v1/approvals/${approvalId}?wait=1`, key);  // a bounded wait
  }
}

async function waitForDecision(approvalId) {
  const until = Date.now() + DEADLINE_MS;
  let last;
  while (Date.now() < until) {
    last = await api('GET', `/v1/approvals/${approvalId}?wait=30`, agentKey);
    if (last.status === 200 && last.body.status !== 'pending') return last;
  }
  return last;
}

test('a refund is gated, escalated, approved by two approvers, then runs once', async () => {
  assert.ok(url && agentKey && approvers.length === 2, 'env: GATE_API_URL, GATE_AGENT_KEY, ' +
    'GATE_APPROVER_KEYS (two)');
  let refunds = 0;
  const refund = () => { refunds += 1; return { id: 're_1', status: 'succeeded' }; };
  const call = {
    run_id: `node-run-${process.pid}`, tool: 'stripe', action: 'create_refund', mode: 'write',
    args: { id: 'ch_9', amount: 700 }, idempotency_key: 'ch_9:refund',
  };

  const gate = await api('POST', '/v1/gate/check', agentKey, call);
  assert.equal(gate.status, 200, JSON.stringify(gate.body));
  assert.equal(gate.body.decision, 'escalate', JSON.stringify(gate.body));
  assert.equal(gate.body.queue, 'finance');
  assert.equal(gate.body.approvals_required, 2);
  assert.equal(gate.body.rule, 'refund-over-threshold');
  assert.ok(gate.body.sla_s > 0 && gate.body.approval_id);
  const id = gate.body.approval_id;

  const decision = waitForDecision(id);  // the agent waits while the approvers vote
  const own = await vote(id, agentKey);
  assert.equal(own.status, 403, 'the agent cannot approve its own request');
  const first = await vote(id, approvers[0]);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(first.body.status, 'pending', 'one approver is not enough');
  const second = await vote(id, approvers[1]);
  assert.equal(second.status, 200, JSON.stringify(second.body));
  assert.equal(second.body.status, 'approved');

  const decided = await decision;
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  assert.equal(decided.body.status, 'approved');
  assert.deepEqual([...decided.body.approved_by].sort(), ['ana@finance', 'ben@finance']);

  // the approval lets go exactly the call it was asked for, once
  const bigger = await api('POST', '/v1/gate/check', agentKey,
    { ...call, args: { id: 'ch_9', amount: 7000 }, approval_id: id });
  assert.equal(bigger.body.decision, 'deny', JSON.stringify(bigger.body));
  assert.equal(bigger.body.rule, 'approval_mismatch');
  const granted = await api('POST', '/v1/gate/check', agentKey, { ...call, approval_id: id });
  assert.equal(granted.status, 200, JSON.stringify(granted.body));
  assert.equal(granted.body.decision, 'allow', JSON.stringify(granted.body));
  if (granted.body.decision === 'allow') refund();
  assert.equal(refunds, 1, 'the refund ran exactly once, after the approval');
  const reused = await api('POST', '/v1/gate/check', agentKey, { ...call, approval_id: id });
  assert.equal(reused.body.decision, 'deny', 'an approval is used up by its call');

  const again = await api('GET', `/v1/approvals/${id}?wait=30`, agentKey);
  assert.equal(again.body.status, 'approved', 'a decided request answers at once');
});
