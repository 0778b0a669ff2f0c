"""A batch the broker refuses leaves a gap in the idempotent producer's sequence: every
later send to that partition failed with OutOfOrderSequenceNumber, for ever (found by the
poison-under-load scenario: the service retried a whole batch about twice a second long
after the topic accepted records again). The publisher now makes its producer anew."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from consumer.adapters.kafka import KafkaPublisher, OutRecord, make_producer
from consumer.adapters.metrics import Metrics
from consumer.errors import PublishRejectedError
from consumer.settings import Settings
from prometheus_client import CollectorRegistry


async def _limit(kafka_admin: Any, topic: str, value: str) -> None:
    config = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": value})
    await kafka_admin.alter_configs([config])
    await asyncio.sleep(1)  # the broker applies it asynchronously


async def test_a_refused_batch_breaks_the_producers_sequence_for_good(
    kafka_bootstrap: str, kafka_admin: Any, unique_name: str
) -> None:
    topic = f"{unique_name}-out"
    await kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    publisher = KafkaPublisher(
        make_producer(settings), Metrics(CollectorRegistry()), lambda: make_producer(settings)
    )
    await publisher.producer.start()
    try:
        await publisher.publish([OutRecord(topic, None, b"before")])
        await _limit(kafka_admin, topic, "64")
        with pytest.raises(PublishRejectedError):
            await publisher.publish([OutRecord(topic, None, b"y" * 200)])
        await _limit(kafka_admin, topic, "1048588")  # an operator fixes the topic

        await publisher.publish([OutRecord(topic, None, b"after")])  # no sequence error
    finally:
        await publisher.producer.stop()
        await kafka_admin.delete_topics([topic])
