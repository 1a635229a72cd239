"""Issue 21, finding 5 (control half): only the ledger's signed records steer agents.

A real Tansu broker per test; records are produced straight to ``agent.control`` as an
attacker with producer rights would, and the SDK's :class:`ControlFollower` (given the
ledger's public key) must ignore, count and report them. Each wait is on a counter or a
state the follower exposes, with a deadline; no wall-clock time is asserted.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from agentledger.core import signing
from agentledger.core.kafka import client_config
from agentledger.producers.guard import OVERRIDE_MAX_AHEAD_MS, ControlFollower, SafeModeGuard
from agentledger.producers.overrides import publish_override
from agentledger.schemas import topics
from agentledger.schemas.signals import CLOSED, NORMAL, OPEN, READ_ONLY, ControlSignal
from tests.helpers import wait_for
from tests.streamutil import StreamWorker

pytestmark = pytest.mark.integration

BREAKER = "breaker:acme/*/stripe"
YEAR_MS = 365 * 24 * 3600 * 1000


def _produce(bootstrap: str, key: str, value: bytes | None) -> None:
    producer = Producer(client_config(bootstrap, "producer"))
    producer.produce(topics.CONTROL, value, key.encode())
    assert producer.flush(15) == 0


def _breaker(state: str, version: int) -> ControlSignal:
    return ControlSignal(kind="breaker", scope="acme/*/stripe", state=state, version=version,
                         ts=datetime.now(UTC), reason="test")


def _signed(key: signing.LedgerKey, signal: ControlSignal) -> bytes:
    return signing.sign_json(key, signing.CONTROL, signal.to_json())


@pytest.fixture
def key(tmp_path: Path) -> signing.LedgerKey:
    return signing.load_or_create(tmp_path / "keys")


def test_the_key_file_is_private_and_its_public_half_is_published(tmp_path: Path) -> None:
    made = signing.load_or_create(tmp_path / "keys")
    private = tmp_path / "keys" / signing.PRIVATE_FILE
    assert private.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "keys" / signing.PUBLIC_FILE).read_text().strip() == made.public_text
    assert signing.load_or_create(tmp_path / "keys").key_id == made.key_id  # loaded, not new
    private.chmod(0o644)
    with pytest.raises(PermissionError):
        signing.load_key(tmp_path / "keys")
    private.chmod(0o600)
    # rotation: a new current key, the old one still trusted for what it signed
    payload = {"kind": "x", "version": 1}
    old_sig = made.sign(signing.CONTROL, payload)
    new = signing.rotate(tmp_path / "keys")
    assert new.key_id != made.key_id
    ring = signing.local_keyring(tmp_path / "keys")
    assert set(ring.keys) == {made.key_id, new.key_id}
    assert ring.check(signing.CONTROL, {**payload, "signature": old_sig}) == "ok"
    assert ring.check(signing.APPROVAL, {**payload, "signature": old_sig}) == "forged", \
        "a signature is bound to its purpose"


def test_a_forged_breaker_with_a_huge_version_is_ignored(broker: str,
                                                        key: signing.LedgerKey) -> None:
    with ControlFollower(broker, trusted=key.keyring()) as follower:
        _produce(broker, BREAKER, _signed(key, _breaker(OPEN, 1)))
        wait_for(lambda: follower.state.get(BREAKER), 30, what="the signed OPEN")

        # the attack: an unsigned CLOSED far in the future, and one with a made-up signature
        _produce(broker, BREAKER, _breaker(CLOSED, 2**52).to_json())
        fake = orjson.loads(_breaker(CLOSED, 2**52 + 1).to_json())
        fake["signature"] = {"alg": "ed25519", "key_id": key.key_id,
                             "sig": base64.urlsafe_b64encode(bytes(64)).decode().rstrip("=")}
        _produce(broker, BREAKER, orjson.dumps(fake))
        wait_for(lambda: follower.refused["unsigned"] == 1 and follower.refused["forged"] == 1,
                 30, what=f"both forgeries counted (refused: {follower.refused})")
        assert (follower.state[BREAKER].state, follower.state[BREAKER].version) == (OPEN, 1)

        # the ledger's next real transition still wins: nothing was pinned
        _produce(broker, BREAKER, _signed(key, _breaker(CLOSED, 2)))
        wait_for(lambda: follower.state[BREAKER].state == CLOSED, 30,
                 what="the signed CLOSED after the forgeries")
        assert follower.verifier.counts["verified"] == 2


def test_an_unsigned_tombstone_does_not_clear_a_breaker(broker: str,
                                                       key: signing.LedgerKey) -> None:
    with ControlFollower(broker, trusted=key.keyring()) as follower:
        guard = SafeModeGuard(follower, "acme", "refund-agent", stale_after_s=3600)
        _produce(broker, BREAKER, _signed(key, _breaker(OPEN, 1)))
        wait_for(lambda: follower.state.get(BREAKER), 30, what="the signed OPEN")
        _produce(broker, BREAKER, None)
        wait_for(lambda: follower.refused["tombstone"] == 1, 30,
                 what=f"the tombstone counted (refused: {follower.refused})")
        assert guard.decide("stripe", "write").rule == "breaker_open"


def test_a_future_dated_unsigned_override_does_not_silence_safe_mode_set(
        broker: str, key: signing.LedgerKey) -> None:
    scope = "acme/refund-agent"
    with ControlFollower(broker, trusted=key.keyring()) as follower:
        guard = SafeModeGuard(follower, "acme", "refund-agent", stale_after_s=3600)
        publish_override(broker, scope, READ_ONLY, "incident 42", by="ops", key=key)
        wait_for(lambda: guard.mode == READ_ONLY, 30, what="the signed override")

        # the attack: an unsigned "normal" dated ten years ahead, meant to win every update
        forged = ControlSignal(kind="override", scope=scope, state=NORMAL,
                               version=time.time_ns() // 1_000_000 + 10 * YEAR_MS,
                               ts=datetime.now(UTC), reason="nothing to see")
        _produce(broker, forged.key, forged.to_json())
        # and a *signed* one dated beyond the allowed skew (a mistake, or a stolen old key
        # signing ahead): bounded too
        ahead = ControlSignal(kind="override", scope=scope, state=NORMAL,
                              version=time.time_ns() // 1_000_000 + 2 * OVERRIDE_MAX_AHEAD_MS,
                              ts=datetime.now(UTC), reason="too far ahead")
        _produce(broker, ahead.key, _signed(key, ahead))
        wait_for(lambda: follower.refused["unsigned"] == 1 and follower.refused["future"] == 1,
                 30, what=f"both overrides refused (refused: {follower.refused})")
        assert guard.mode == READ_ONLY and not guard.decide("stripe", "write")

        # the operator's own, signed, still works: set halted, then clear
        publish_override(broker, scope, "halted", "worse", by="ops", key=key)
        wait_for(lambda: guard.mode == "halted", 30, what="the signed halted override")
        publish_override(broker, scope, "cleared", "fixed", by="ops", key=key)
        wait_for(lambda: guard.mode == NORMAL, 30, what="the signed clear")
        assert guard.decide("stripe", "write").allowed


def test_a_follower_without_a_key_says_it_does_not_verify(broker: str) -> None:
    """The back-compatible mode (no key configured anywhere): obeyed, but counted as
    unverified, so health and stats can say that nothing is checked."""
    with ControlFollower(broker, trusted=None) as follower:
        _produce(broker, BREAKER, _breaker(OPEN, 1).to_json())
        wait_for(lambda: follower.state.get(BREAKER), 30, what="the unverified OPEN")
        report = follower.verifier.report()
        assert report["verifying"] is False and report["unverified"] == 1


def test_stream_workers_sign_what_they_publish(broker: str, service_env: dict[str, str],
                                               settings, tmp_path: Path) -> None:
    """A real ``agentledger streams`` worker: its heartbeats verify against the key it made
    in its data directory, and none of its records is refused."""
    keys = settings.data_dir / "keys"
    with StreamWorker(service_env, tmp_path / "worker.log"):
        ring = wait_for(lambda: signing.local_keyring(keys) or None, 90,
                        what=f"the worker's public key in {keys}")
        with ControlFollower(broker, trusted=ring) as follower:
            wait_for(lambda: follower.verifier.counts["verified"] >= 2, 90,
                     what=f"signed heartbeats (counts: {follower.verifier.counts})")
            assert follower.heartbeats and follower.refused["forged"] == 0
            assert follower.refused["unsigned"] == 0


def test_where_a_follower_finds_the_ledger_key(tmp_path: Path) -> None:
    """Setting first, then a ledger process's own key dir, then the local stack's — only for
    the broker that stack published; else None (unverified, reported as such)."""
    from agentledger.core import discovery
    from agentledger.core.settings import Settings

    data = tmp_path / "data"
    made = signing.load_or_create(data / "keys")
    bare = Settings(data_dir=data)
    assert signing.trusted_keys(bare, "127.0.0.1:1") is None, "no stack published a broker"
    discovery.publish(bare, discovery.BROKER_FILE, {"bootstrap": "127.0.0.1:1"})
    try:
        local = signing.trusted_keys(bare, "127.0.0.1:1")
        assert local is not None and set(local.keys) == {made.key_id}
        assert signing.trusted_keys(bare, "127.0.0.1:2") is None, "another broker's records"
    finally:
        discovery.withdraw(bare, discovery.BROKER_FILE)
    other = signing.LedgerKey.generate()
    by_setting = signing.trusted_keys(Settings(data_dir=data, ledger_public_key=(
        f"{other.public_text}, {data / 'keys' / signing.PUBLIC_FILE}")), None)
    assert by_setting is not None and set(by_setting.keys) == {other.key_id, made.key_id}
    shared = signing.trusted_keys(Settings(data_dir=tmp_path / "x",
                                           ledger_key_dir=tmp_path / "shared"), None)
    assert shared is not None and set(shared.keys) == {
        signing.load_or_create(tmp_path / "shared").key_id}
