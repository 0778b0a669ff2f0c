"""A status-change event Kafka refuses, against the real servers (invariant I6 and the
failure policy).

- Refused by our own producer (the event is over ``max_request_size``, 1 MiB: a pass whose
  ``pass_uuid`` is 1.1 million characters): that event's fault. The orphan relay moves it,
  whole, to ``pass_status_outbox_rejected``, publishes the ordinary one behind it, and then
  has nothing left to try.
- Refused by the broker (the topic's ``max.message.bytes`` is 2,000): the topic's limit is
  below what the service writes. Nothing is set aside: the relay raises a refusal of the
  topic (the consume loop pauses on it) and every entry stays queued until it is fixed.
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
from consumer.errors import PublishRejectedError
from consumer.service.outbox import OutboxRelay
from consumer.service.relay_ledger import RelayLedger
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


@pytest.fixture
async def status_topic(kafka_admin: Any, unique_name: str) -> AsyncIterator[str]:
    topic = f"{unique_name}-status"
    await kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    try:
        yield topic
    finally:
        await kafka_admin.delete_topics([topic])


def _settings(kafka_bootstrap: str, mongodb_uri: str, database: str) -> Settings:
    return Settings.from_env(
        {
            "PASS_STATUS_MONGODB_URI": mongodb_uri,
            "PASS_STATUS_MONGODB_DATABASE": database,
            "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        }
    )


async def _relay_twice(settings: Settings, topic: str) -> tuple[Metrics, int]:
    metrics = Metrics(CollectorRegistry())
    client = make_client(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        store = MongoCacheStore(client, settings, metrics)
        relay = OutboxRelay(
            store, KafkaPublisher(producer, metrics), metrics, topic, RelayLedger(999)
        )
        await relay.relay_orphans(NOW, timedelta(seconds=30))
        return metrics, await relay.relay_orphans(NOW, timedelta(seconds=30))
    finally:
        await producer.stop()
        await client.close()


async def test_an_event_our_producer_refuses_moves_aside_and_the_next_one_is_published(
    kafka_bootstrap: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[Document],
    status_topic: str,
) -> None:
    settings = _settings(kafka_bootstrap, mongodb_uri, mongo_db.name)
    refused, ordinary = _entry("r" * 1_100_000), _entry("ordinary")
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
    metrics, backlog = await _relay_twice(settings, status_topic)

    doc = await cache.find_one({"_id": "d7"})
    assert doc is not None
    assert doc[OUTBOX] == []
    assert doc[OUTBOX_SINCE] is None
    assert doc[OUTBOX_REJECTED] == [refused]
    assert backlog == 0
    published = [
        orjson.loads(r.value)
        for r in await read_topic(kafka_bootstrap, status_topic, expect=1, wait=10)
    ]
    assert {e["event_id"] for e in published} == {ordinary["event_id"]}
    assert metrics.registry.get_sample_value("pass_status_outbox_rejected_total") == 1


async def test_a_topic_whose_size_limit_refuses_events_keeps_them_queued_and_raises(
    kafka_bootstrap: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[Document],
    small_topic: str,
) -> None:
    """A misconfigured topic used to drain every event into the rejected list."""
    settings = _settings(kafka_bootstrap, mongodb_uri, mongo_db.name)
    big, ordinary = _entry("r" * 3000), _entry("ordinary")
    cache = mongo_db["bytemark_tickets_cache"]
    since = NOW - timedelta(hours=1)
    await cache.insert_one(
        {"_id": "d7", "user_id": 7, "passes": [], OUTBOX: [big, ordinary], OUTBOX_SINCE: since}
    )
    with pytest.raises(PublishRejectedError) as refused:
        await _relay_twice(settings, small_topic)
    assert refused.value.topic == small_topic

    doc = await cache.find_one({"_id": "d7"})
    assert doc is not None
    assert doc[OUTBOX] == [big, ordinary]  # nothing set aside, nothing lost
    assert OUTBOX_REJECTED not in doc
