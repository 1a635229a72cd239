"""A faust Kafka transport for the control loop: short long-polls, and batch delivery.

1. Consumers long-poll for 50 ms instead of 1.5 s. faust hard-codes aiokafka's
   ``fetch_max_wait_ms=1500``. A broker that does not answer a waiting fetch as soon as
   data arrives (Tansu, measured) then adds up to 1.5 s per hop, and the control loop has
   two hops (events → facts → control) inside a one-second budget.

2. Batch delivery for the busiest topic. faust hands every record to its streams one at a
   time: per record a task pair in the drain loop (``wait_first``), the conductor's flow
   control and decode, a queue, the stream iterator and its ack. Measured on
   ``bench/bench_control.py``, that costs more per event than folding it does
   (``bench/faust_ceiling.py``: a do-nothing agent). A topic registered with
   :meth:`BatchDeliveryTransport.deliver_in_batches` skips all of it: the records of one
   fetch go to the handler as one list of faust ``Message``s.

Delivery semantics of a batch topic (the same as a faust agent's, at-least-once):

- the handler runs in the consumer's drain loop, so nothing else is delivered meanwhile
  and records are handed over in offset order per partition;
- a record is acked (its offset becomes committable) only after the handler returned, and
  faust flushes the producer before every commit, so whatever the handler sent is in
  Kafka before the source offset is committed. A crash re-delivers the uncommitted tail;
- records fetched before a rebalance (another consumer generation) are dropped unacked:
  whoever owns their partition now reads them again from the committed offset;
- the handler waits while faust's flow control is suspended (during a rebalance), as
  faust's own delivery does.

Everything else (group membership, assignment, tables and their changelogs, commits,
other topics' agents) is faust's own driver, unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

FETCH_MAX_WAIT_MS = 50

BatchHandler = Callable[[list[Message]], Awaitable[None]]


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the fetcher starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """faust's fetch, minus the batch topics' records, which go to their handler
        once the fetch has been walked (see the module docstring for the semantics)."""
        handlers = cast(BatchDeliveryTransport, self.transport).batch_handlers
        batches: dict[str, list[Message]] = {}
        read_offset = self._read_offset
        async for tp, message in super().getmany(timeout):
            if tp.topic not in handlers:
                yield tp, message
                continue
            last = read_offset[tp]
            if last is None or message.offset >= last:  # faust's rule for re-reads
                batches.setdefault(tp.topic, []).append(message)
        for topic, messages in batches.items():
            await self._deliver(handlers[topic], messages)

    async def _deliver(self, handler: BatchHandler, messages: list[Message]) -> None:
        app = self.app
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        generation = app.consumer_generation_id
        live = [m for m in messages if m.generation_id == generation]
        if not live or not self.flow_active:
            return
        await handler(live)
        ack, read_offset = self.ack, self._read_offset
        for message in live:
            ack(message)
            read_offset[message.tp] = message.offset


class BatchDeliveryTransport(driver.Transport):
    Consumer = _Consumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}

    def deliver_in_batches(self, topic: str, handler: BatchHandler) -> None:
        """Hand ``topic``'s records to ``handler`` one fetch at a time (the topic must be
        subscribed through the app, e.g. ``app.topics.add(app.topic(name))``)."""
        self.batch_handlers[topic] = handler
