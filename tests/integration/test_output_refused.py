"""An output topic that refuses writes pauses the service; it never drains good inputs into
the dead-letter topic (issue 19, item 2), against the real broker and store.

The status topic is deleted under traffic (auto-creation is off, as in production): the
consumer must dead-letter nothing, commit nothing past the unapplied inputs, answer
``/readyz`` with 503 and the reason, raise ``pass_status_output_refused``; once the topic is
back, every input is applied and its event published, by itself.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    eventually,
    produce_json,
    read_topic,
    values,
)

Collection = AsyncCollection[dict[str, Any]]


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(
        meta.offset
        for tp, meta in offsets.items()
        if isinstance(tp, TopicPartition) and tp.topic == topic and meta.offset > 0
    )


async def test_refused_status_topic_pauses_and_loses_nothing_once_restored(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    bootstrap = settings.kafka_bootstrap_servers
    now = datetime.now(UTC)
    users = {uid: a_pass("USABLE", timedelta(hours=1), now=now) for uid in range(2000, 2030)}
    await cache.insert_many([a_user(uid, [p]) for uid, p in users.items()])
    consumer = ConsumerProcess(service_env, name="paused").start()
    consumers.append(consumer)
    before, during = list(users)[:10], list(users)[10:]
    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, users[u]["pass_uuid"]) for u in before],
    )
    await read_topic(bootstrap, settings.topic_status_changed, expect=10, settle=0)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed_before = await eventually(
            lambda: _committed(admin, settings.group_id, settings.topic_ticket_used),
            lambda done: done == len(before),
        )
        await admin.delete_topics([settings.topic_status_changed])
        await asyncio.sleep(2)
        await produce_json(
            bootstrap,
            settings.topic_ticket_used,
            [ticket_used(u, users[u]["pass_uuid"]) for u in during],
        )
        paused = consumer.wait_for("consumption_paused", timeout=90)[0]
        assert paused["reason"] == "output_refused"
        assert settings.topic_status_changed in paused["error"]
        status, body = consumer.http_get("/readyz")
        assert status == 503
        faults = orjson.loads(body)["faults"]
        assert any("output_refused" in f for f in faults.values()), faults
        _, metrics = consumer.http_get("/metrics")
        assert (
            f'pass_status_output_refused{{topic="{settings.topic_status_changed}"}} 1.0'
            in metrics.decode()
        )
        assert await _committed(admin, settings.group_id, settings.topic_ticket_used) == (
            committed_before
        )
        # An operator restores the topic: the service resumes by itself.
        await admin.create_topics(
            [NewTopic(settings.topic_status_changed, num_partitions=3, replication_factor=1)]
        )
        changes = values(
            await read_topic(bootstrap, settings.topic_status_changed, expect=len(during), wait=90)
        )
        assert {c["user_id"] for c in changes} >= set(during)

        await eventually(
            lambda: _committed(admin, settings.group_id, settings.topic_ticket_used),
            lambda done: done == len(users),
            wait=60,
        )
    finally:
        await admin.close()
    assert await cache.count_documents({"passes.0.status": "USING"}) == len(users)
    dead = await read_topic(bootstrap, settings.topic_dead_letter, wait=3)
    assert dead == []  # the inputs were fine: none was dead-lettered
    status, _ = consumer.http_get("/readyz")
    assert status == 200
    assert consumer.events("recovered")
    assert consumer.stop() == 0
