"""The metrics the alerts of issue 21 need, asserted on their values (fakes, no Kafka):

- per-partition lag in seconds and the time each partition's committed offset last advanced
  (the stuck-partition and lag-in-seconds alerts);
- end-to-end latency of tick-caused status changes;
- fetch attempts counted beside fetch errors (the Kafka error ratio's denominator).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from consumer.domain.events import Cause, CauseType
from consumer.service.background import BackgroundJobs
from consumer.service.consume_plan import ConsumePlan
from consumer.service.deadletter import InputRecord
from consumer.service.health import Health
from consumer.settings import Settings

from tests.unit.fakes import FakeCacheStore, FakeConsumer, FakeService, a_runner

USED_0 = TopicPartition("used", 0)
USED_1 = TopicPartition("used", 1)
TICK_0 = TopicPartition("tick", 0)
SETTINGS = Settings(
    topic_ticket_used="used",
    topic_tick="tick",
    topic_dead_letter=FakeService.DEAD_LETTER_TOPIC,
    topic_status_changed=FakeService.STATUS_TOPIC,
)


class LaggingConsumer(FakeConsumer):
    """A consumer whose partitions end at ``ends``; committed offsets come from the plan."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        super().__init__(*((tp.topic, tp.partition) for tp in ends))
        self.ends = ends

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        raise AssertionError(f"{tp}: the plan knows the committed offsets")

    async def getmany(self, **_: Any) -> dict[Any, list[Any]]:
        raise KafkaConnectionError("injected: broker restarting")


def sample(service: FakeService, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels)


def a_plan(committed: dict[TopicPartition, int]) -> ConsumePlan:
    plan = ConsumePlan("used", "tick")
    plan.partitions_assigned(list(committed))
    plan.committed.update(committed)
    return plan


def jobs(service: FakeService, consumer: FakeConsumer) -> BackgroundJobs:
    return BackgroundJobs(SETTINGS, consumer, service.relay, Health(), service.metrics)


async def probes() -> tuple[bool, bool]:
    return True, True


async def test_lag_seconds_is_the_age_of_the_newest_handled_event_while_a_partition_lags() -> None:
    service = FakeService(FakeCacheStore())
    consumer = LaggingConsumer({USED_0: 10, USED_1: 4})
    plan = a_plan({USED_0: 6, USED_1: 4})
    ninety_seconds_ago = int((time.time() - 90) * 1000)
    bad = InputRecord("used", 0, 5, b"k", b"not json", ninety_seconds_ago)
    await service.ticket_used.handle([bad])  # dead-lettered: handled all the same

    await jobs(service, consumer).observe(probes, plan)

    lag_0 = sample(service, "pass_status_consumer_lag_seconds", topic="used", partition="0")
    assert lag_0 == pytest.approx(90, abs=5)
    # No lag: 0, whatever was handled before.
    assert sample(service, "pass_status_consumer_lag_seconds", topic="used", partition="1") == 0
    assert sample(service, "pass_status_consumer_lag_messages", topic="used", partition="0") == 4


async def test_last_commit_time_moves_only_when_the_committed_offset_advances() -> None:
    service = FakeService(FakeCacheStore())
    consumer = LaggingConsumer({USED_0: 10})
    plan = a_plan({USED_0: 3})
    background = jobs(service, consumer)
    labels = {"topic": "used", "partition": "0"}

    before = time.time()
    await background.observe(probes, plan)
    first = sample(service, "pass_status_last_commit_timestamp_seconds", **labels)
    assert first is not None
    assert first >= before  # assignment counts as the first commit

    await background.observe(probes, plan)  # nothing committed since: the time stays
    assert sample(service, "pass_status_last_commit_timestamp_seconds", **labels) == first

    plan.committed[USED_0] = 7
    await asyncio.sleep(0.01)
    await background.observe(probes, plan)
    moved = sample(service, "pass_status_last_commit_timestamp_seconds", **labels)
    assert moved is not None
    assert moved > first

    consumer.partitions.clear()  # revoked: its series goes
    await background.observe(probes, plan)
    assert sample(service, "pass_status_last_commit_timestamp_seconds", **labels) is None


async def test_a_tick_partition_whose_sweep_runs_counts_as_moving() -> None:
    """It is committed when its sweep ends, which may take hours: not a stuck partition."""
    service = FakeService(FakeCacheStore())
    consumer = LaggingConsumer({TICK_0: 6})
    plan = a_plan({TICK_0: 5})
    service.metrics.record_consumed("tick", 0, int((time.time() - 3600) * 1000))
    background = jobs(service, consumer)
    labels = {"topic": "tick", "partition": "0"}
    await background.observe(probes, plan)
    first = sample(service, "pass_status_last_commit_timestamp_seconds", **labels)
    assert sample(service, "pass_status_consumer_lag_seconds", **labels) == pytest.approx(
        3600, abs=5
    )

    plan.batch_fetched({TICK_0: [5]})  # its sweep starts
    assert plan.ticking == {TICK_0}
    await asyncio.sleep(0.01)
    await background.observe(probes, plan)

    sweeping = sample(service, "pass_status_last_commit_timestamp_seconds", **labels)
    assert first is not None
    assert sweeping is not None
    assert sweeping > first
    assert sample(service, "pass_status_consumer_lag_seconds", **labels) is None


async def test_tick_caused_status_changes_record_end_to_end_latency() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    expired = (now - timedelta(hours=1)).isoformat()
    store = FakeCacheStore(
        *(
            {
                "_id": f"d{u}",
                "user_id": u,
                "passes": [
                    {"pass_uuid": f"p{u}", "status": "USING", "payload": {"expiration": expired}}
                ],
            }
            for u in (1, 2)
        )
    )
    service = FakeService(store)
    tick_at = now - timedelta(seconds=3)

    await service.sweeper.due(tick_at, 0, 1, True, Cause(CauseType.TICK, "t1"))

    name = "pass_status_end_to_end_latency_seconds"
    assert sample(service, name + "_count", cause="tick_due") == 2
    assert sample(service, name + "_bucket", cause="tick_due", le="2.5") == 0
    assert sample(service, name + "_bucket", cause="tick_due", le="5.0") == 2
    assert sample(service, name + "_count", cause="ticket_used") is None


async def test_fetch_attempts_are_counted_beside_fetch_errors() -> None:
    service = FakeService(FakeCacheStore())
    consumer = LaggingConsumer({USED_0: 1})
    runner = a_runner(
        service,
        consumer,
        dataclasses.replace(SETTINGS, backoff_initial_seconds=0.001, backoff_max_seconds=0.001),
    )

    await runner._poll_once()

    assert sample(service, "pass_status_kafka_errors_total", operation="fetch") == 1
    attempts = "pass_status_kafka_operation_duration_seconds_count"
    assert sample(service, attempts, operation="fetch") == 1


async def test_handled_ticks_count_toward_lag_seconds() -> None:
    service = FakeService(FakeCacheStore())
    ticks = service.parts.ticks
    for timestamp_ms in (5_000, 4_000, None):  # an older one and none: not counted
        await ticks.handle(InputRecord("tick", 3, 1, b"0", b"not json", timestamp_ms))
    assert service.metrics.consumed_event_time == {("tick", 3): 5.0}
