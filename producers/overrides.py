"""Manual overrides of an agent's mode (``agentledger safe-mode``), published on
``agent.control`` beside the rules' own signals.

An override is a :class:`~agentledger.schemas.signals.ControlSignal` of kind ``override``,
keyed like the rules' signals so the compacted topic keeps the newest; the
:class:`~agentledger.producers.guard.ControlFollower` in every agent reads it back like any
other signal.

It is signed with the ledger's key like every control signal (``core/signing.py``), so a
forged override — however far in the future its version — is ignored by verifying
followers. Its version is wall-clock milliseconds (no shared counter between operators);
followers also ignore a version too far ahead of their clock
(:data:`agentledger.producers.guard.OVERRIDE_MAX_AHEAD_MS`), so not even a signed override can be
dated to win against every later one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from confluent_kafka import Producer

from agentledger.core import signing
from agentledger.core.kafka import client_config
from agentledger.schemas import topics
from agentledger.schemas.signals import ControlSignal


def publish_override(bootstrap: str, scope: str, state: str, reason: str, *, by: str,
                     key: signing.LedgerKey, security: dict[str, str] | None = None,
                     timeout_s: float = 15) -> ControlSignal:
    """Publish an override of ``scope`` (TENANT/AGENT) to ``state``, signed by ``key``, and
    wait until Kafka acknowledged it; :class:`TimeoutError` if it did not within
    ``timeout_s``."""
    signal = ControlSignal(
        kind="override", scope=scope, state=state, version=time.time_ns() // 1_000_000,
        ts=datetime.now(UTC), reason=reason, policy_version="manual", details={"by": by})
    value = signing.sign_json(key, signing.CONTROL, signal.to_json())
    producer = Producer(client_config(bootstrap, "producer", extra=security))
    producer.produce(topics.CONTROL, value, signal.key.encode())
    if producer.flush(timeout_s):
        raise TimeoutError(f"Kafka did not acknowledge the override within {timeout_s:g}s")
    return ControlSignal.from_json(value)
