"""A faust Kafka transport whose consumers long-poll for 50 ms instead of 1.5 s.

faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``. A broker that does not answer a
waiting fetch as soon as data arrives (Tansu, measured) then adds up to 1.5 s per hop, and
the control loop has two hops (events → facts → control) inside a one-second budget from
a failing call to the guard refusing the next. Everything else is faust's own driver.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the fetcher starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LowLatencyTransport(driver.Transport):
    Consumer = _Consumer
