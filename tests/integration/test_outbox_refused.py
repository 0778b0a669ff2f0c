"""A status-change event Kafka refuses for good, against the real servers (invariant I6).

The status topic accepts records of at most 2,000 bytes; a user's outbox holds an event
of a pass whose ``pass_uuid`` is 3,000 characters (refused: too large) ahead of an
ordinary one. The orphan relay must move the refused one, whole, to
``pass_status_outbox_rejected``, publish the other, and then have nothing left to try.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.admin import NewTopic
from consumer.adapters.kafka import KafkaPublisher, make_producer
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from consumer.domain.outbox import OUTBOX, OUTBOX_REJECTED, OUTBOX_SINCE
from consumer.service.outbox import OutboxRelay
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.integration.harness import read_topic

NOW = datetime.now(UTC).replace(microsecond=0)


def _entry(pass_uuid: str) -> Document:
    return {
        "event_id": f"ev-{pass_uuid[:8]}",
        "user_id": 7,
        "pass_uuid": pass_uuid,
        "from_status": "USABLE",
        "to_status": "USING",
        "status_log": "USABLE -> USING",
        "effective_at": "2026-01-01T00:00:00.000Z",
        "detected_at": "2026-01-01T00:00:00.000Z",
        "cause": {"type": "ticket_used", "event_id": "tu-1"},
    }


@pytest.fixture
async def small_topic(kafka_admin: Any, unique_name: str) -> AsyncIterator[str]:
    topic = f"{unique_name}-status"
    await kafka_admin.create_topics(
        [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})]
    )
    try:
        yield topic
    finally:
        await kafka_admin.delete_topics([topic])


async def test_an_event_kafka_refuses_moves_aside_and_the_next_one_is_published(
    kafka_bootstrap: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[Document],
    small_topic: str,
) -> None:
    settings = Settings.from_env(
        {
            "PASS_STATUS_MONGODB_URI": mongodb_uri,
            "PASS_STATUS_MONGODB_DATABASE": mongo_db.name,
            "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        }
    )
    refused, ordinary = _entry("r" * 3000), _entry("ordinary")
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_one(
        {
            "_id": "d7",
            "user_id": 7,
            "passes": [],
            OUTBOX: [refused, ordinary],
            OUTBOX_SINCE: NOW - timedelta(hours=1),
        }
    )
    metrics = Metrics(CollectorRegistry())
    client = make_client(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        store = MongoCacheStore(client, settings, metrics)
        relay = OutboxRelay(store, KafkaPublisher(producer, metrics), metrics, small_topic)
        await relay.relay_orphans(NOW, timedelta(seconds=30))
        backlog = await relay.relay_orphans(NOW, timedelta(seconds=30))
    finally:
        await producer.stop()
        await client.close()

    doc = await cache.find_one({"_id": "d7"})
    assert doc is not None
    assert doc[OUTBOX] == []
    assert doc[OUTBOX_SINCE] is None
    assert doc[OUTBOX_REJECTED] == [refused]
    assert backlog == 0
    published = [
        orjson.loads(r.value)
        for r in await read_topic(kafka_bootstrap, small_topic, expect=1, wait=10)
    ]
    assert {e["event_id"] for e in published} == {ordinary["event_id"]}
    assert metrics.registry.get_sample_value("pass_status_outbox_rejected_total") == 1
