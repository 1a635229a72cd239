"""Intake refusals land in ``rejected_events``: the sink is the store's one writer.

The dead letters themselves are :mod:`agentledger.core.dead_letters`, written the same way
by the sink and by the OTel intakes.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from agentledger.core.dead_letters import PAYLOAD_KEEP_BYTES, received_at
from agentledger.schemas import topics


def refusal_row(dead_letter: Message, landed_topics: tuple[str, ...]) -> list[Any] | None:
    """The ``rejected_events`` row of a dead letter another process wrote (an OTel intake),
    or None for one the sink landed itself when it wrote it (its original topic is one of
    ``landed_topics``) and for a record that is not a dead letter at all.

    Intakes hold no store: they dead-letter what they refuse and the sink, the store's
    one writer, lands it. The row is the one the intake's :meth:`DeadLetters.reject`
    returned, rebuilt from the headers, keyed by the original (topic, partition, offset),
    so a redelivered dead letter is one row to ``FINAL``.
    """
    headers = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")
               for k, v in list(dead_letter.headers() or [])}
    origin = headers.get(topics.H_TOPIC, "")
    if origin in landed_topics:
        return None
    try:
        partition, offset = int(headers[topics.H_PARTITION]), int(headers[topics.H_OFFSET])
        size, reason = int(headers[topics.H_SIZE]), headers[topics.H_REASON]
    except (KeyError, ValueError):
        return None
    value = dead_letter.value() or b""
    return [received_at(dead_letter), origin, partition, offset,
            (dead_letter.key() or b"").decode("utf-8", "replace"), reason,
            headers.get(topics.H_ERROR, ""), size, headers.get(topics.H_SHA256, ""),
            value[:PAYLOAD_KEEP_BYTES].decode("utf-8", "replace")]
