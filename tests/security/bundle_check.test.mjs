// A replay bundle checked offline in another language (Node 20: node:test and node:crypto,
// no npm package): each run's hash chain (RFC 8785 canonical JSON, `canon: "jcs"`), its
// last event as the inclusion proof's leaf, the RFC 9162 audit path up to the signed
// head's root, and the head's ed25519 signature by the ledger's public key. The same
// checks as agentledger/core/offline.py (docs/integrity.md).
//
// Run by tests/security/test_tamper.py with BUNDLE_FILE (a bundle from the real stack),
// LEDGER_PUBLIC_KEY (base64url raw ed25519, as ledger.pub holds it) and, for the
// negative case, TAMPERED_FILE (the same bundle with one event changed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash, createPublicKey, verify } from 'node:crypto';

// RFC 8785 for values JSON.parse produced: ECMAScript number and string forms are JCS's,
// keys sorted by UTF-16 code units (what Array.prototype.sort does).
function jcs(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']';
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + jcs(v[k])).join(',') + '}';
}

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const leafHash = (leaf) => sha256(Buffer.from([0]), Buffer.from(
  `agentledger.leaf.v1\n${leaf.tenant}\n${leaf.run_id}\n${leaf.event_id}\n${leaf.event_hash}`));
const nodeHash = (l, r) => sha256(Buffer.from([1]), l, r);

// RFC 9162 §2.1.3.2
function verifyInclusion(hash, index, size, proof, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = hash;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) while (fn !== 0 && fn % 2 === 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

function checkRun(run, publicKey) {
  let prev = '0'.repeat(64);
  run.events.forEach((ev, seq) => {
    assert.equal(ev.seq, seq, `run ${run.run_id}: seq`);
    assert.equal(ev.canon, 'jcs', `run ${run.run_id}: only the jcs form is portable`);
    assert.equal(ev.prev_hash, prev, `run ${run.run_id} seq ${seq}: prev_hash`);
    const { hash, sig, ...hashed } = ev;
    const mine = sha256(jcs(hashed), prev).toString('hex');
    assert.equal(hash, mine, `run ${run.run_id} seq ${seq}: hash`);
    prev = mine;
  });
  const proof = run.inclusion;
  assert.equal(proof.status, 'included');
  const last = run.events[run.events.length - 1];
  assert.deepEqual(proof.leaf, { tenant: last.tenant, run_id: last.run_id,
    event_id: last.event_id, event_hash: last.hash });
  const head = proof.head;
  const path = proof.proof.map((h) => Buffer.from(h, 'hex'));
  assert.ok(verifyInclusion(leafHash(proof.leaf), proof.leaf_index, head.tree_size, path,
    Buffer.from(head.root_hash, 'hex')), 'the audit path leads to the signed root');
  const message = Buffer.from(`agentledger.checkpoint.v1\n${head.log_id}\n${head.tree_size}\n` +
    `${head.root_hash}\n${head.issued_at_ms}\n`);
  const signature = /^[0-9a-f]+$/.test(head.signature)
    ? Buffer.from(head.signature, 'hex') : Buffer.from(head.signature, 'base64url');
  assert.ok(verify(null, message, publicKey, signature), 'the head is signed by the ledger key');
}

const publicKey = () => createPublicKey({
  key: { kty: 'OKP', crv: 'Ed25519', x: process.env.LEDGER_PUBLIC_KEY.trim() }, format: 'jwk' });

test('a bundle from the real stack is proven offline', () => {
  const bundle = JSON.parse(readFileSync(process.env.BUNDLE_FILE, 'utf8'));
  assert.ok(bundle.runs.length >= 1);
  const started = process.hrtime.bigint();
  for (const run of bundle.runs) checkRun(run, publicKey());
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`offline check: ${bundle.runs.length} run(s) in ${ms.toFixed(2)} ms`);
});

test('a bundle with one event changed is refused', () => {
  const bundle = JSON.parse(readFileSync(process.env.TAMPERED_FILE, 'utf8'));
  assert.throws(() => { for (const run of bundle.runs) checkRun(run, publicKey()); },
    /hash|audit path|leaf/);
});
