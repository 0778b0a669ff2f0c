"""A write that Kafka does not acknowledge (NotEnoughReplicas: the producer retries by itself)
is visible to the readiness probe as the time the oldest publish has waited."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from consumer.adapters.kafka import KafkaPublisher, OutRecord
from consumer.adapters.metrics import Metrics
from prometheus_client import CollectorRegistry


class HeldProducer:
    """send() enqueues; the acknowledgement comes when the test releases it."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, *_args: Any, **_kwargs: Any) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def test_waiting_seconds_is_the_age_of_the_oldest_unacknowledged_publish() -> None:
    producer = HeldProducer()
    publisher = KafkaPublisher(cast("AIOKafkaProducer", producer), Metrics(CollectorRegistry()))
    assert publisher.waiting_seconds() == 0.0
    record = OutRecord("status", b"k", b"v")
    first = asyncio.create_task(publisher.publish([record]))
    await asyncio.sleep(0.3)
    second = asyncio.create_task(publisher.publish([record]))
    await asyncio.sleep(0.1)

    assert publisher.waiting_seconds() >= 0.4  # the older of the two

    producer.acks[0].set_result(None)
    await first
    assert 0.1 <= publisher.waiting_seconds() < 0.3  # now the younger one
    producer.acks[1].set_result(None)
    await second
    assert publisher.waiting_seconds() == 0.0
