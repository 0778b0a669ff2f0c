"""The runner carries out its plan: tick partitions paused while their sweep runs, then
committed past each tick and resumed; all on fakes, without Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import TopicPartition
from consumer.settings import Settings

from tests.unit.fakes import FakeCacheStore, FakeConsumer, FakeMessage, FakeService, a_runner

NOW = datetime.now(UTC)
SETTINGS = Settings(
    topic_ticket_used="used",
    topic_tick="tick",
    topic_dead_letter=FakeService.DEAD_LETTER_TOPIC,
    topic_status_changed=FakeService.STATUS_TOPIC,
)
TICK_0 = TopicPartition("tick", 0)


def a_tick(offset: int) -> FakeMessage:
    body = {"event_id": f"t{offset}", "tick_at": NOW.isoformat(), "mode": "due"}
    return FakeMessage("tick", 0, offset, b"0", orjson.dumps(body))


async def test_a_tick_partition_is_paused_while_its_sweep_runs_then_committed_and_resumed() -> None:
    expired = (NOW - timedelta(hours=1)).isoformat()
    store = FakeCacheStore(
        {
            "_id": "d7",
            "user_id": 7,
            "passes": [{"pass_uuid": "p", "status": "USING", "payload": {"expiration": expired}}],
        }
    )
    service = FakeService(store)
    consumer = FakeConsumer(("tick", 0), ("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    held = store.hold("due_users")

    assert await runner._handle_batch({TICK_0: [a_tick(4), a_tick(5)]}) is None
    await held.reached.wait()
    assert consumer.paused == {TICK_0}
    assert consumer.commits == []
    held.release()
    await asyncio.wait_for(asyncio.gather(*runner._tick_tasks._tasks.values()), 5)

    assert consumer.commits == [{TICK_0: 5}, {TICK_0: 6}]
    assert consumer.paused == set()
    assert [e["status_log"] for e in service.status_events()] == ["USING -> EXPIRED"]


async def test_a_revoked_tick_partition_is_cancelled_uncommitted_and_not_resumed() -> None:
    store = FakeCacheStore({"_id": "d7", "user_id": 7, "passes": []})
    service = FakeService(store)
    consumer = FakeConsumer(("tick", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    held = store.hold("due_users")
    await runner._handle_batch({TICK_0: [a_tick(4)]})
    await held.reached.wait()

    consumer.partitions.clear()
    await runner.on_revoked({TICK_0})

    assert len(runner._tick_tasks) == 0
    assert consumer.commits == []
    assert consumer.paused == {TICK_0}  # a revoked partition is not ours to resume
