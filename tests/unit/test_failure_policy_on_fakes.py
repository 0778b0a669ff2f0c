"""The defects of issue 19, each reproduced on the fakes through the real runner, with
PyMongo's and the service's real exception classes: no single input, output refusal or
document stops or drains a partition."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from consumer.errors import PublishRejectedError, StoreUnavailableError
from consumer.service.runner import Runner
from pymongo.errors import OperationFailure, WriteError

from tests.unit.fakes import (
    RUNNER_SETTINGS,
    FakeCacheStore,
    FakeConsumer,
    FakeMessage,
    FakeService,
    a_runner,
    a_user_doc,
    ticket_used_message,
)

NOW = datetime.now(UTC)
SETTINGS = dataclasses.replace(
    RUNNER_SETTINGS, backoff_initial_seconds=0.01, backoff_max_seconds=0.02
)
USED_0 = TopicPartition("used", 0)
TICK_0 = TopicPartition("tick", 0)


def a_user(user_id: int, *, expired: bool = False) -> dict[str, Any]:
    return a_user_doc(user_id, NOW, expired=expired)


def used(user_id: int, offset: int) -> FakeMessage:
    return ticket_used_message(user_id, offset, NOW)


def a_tick(offset: int, value: bytes | None = None) -> FakeMessage:
    body = {"event_id": f"t{offset}", "tick_at": NOW.isoformat(), "mode": "due"}
    return FakeMessage("tick", 0, offset, b"0", value or orjson.dumps(body))


async def started(service: FakeService, consumer: FakeConsumer) -> Runner:
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    runner._health.started = runner._health.joined_group = True
    runner._health.mongodb_ok = runner._health.kafka_ok = True
    return runner


async def poll(runner: Runner, times: int) -> None:
    for _ in range(times):
        await runner._poll_once()


# -- a refused output pauses; it does not drain good inputs ----------------------------------


async def test_refused_status_topic_drains_good_inputs_into_the_dead_letter_topic() -> None:
    store = FakeCacheStore(a_user(7), a_user(8))
    service = FakeService(store)
    service.publisher.refuse(lambda r: r.topic == FakeService.STATUS_TOPIC, PublishRejectedError)
    consumer = FakeConsumer(("used", 0))
    consumer.append(used(7, 0), used(8, 1))
    runner = await started(service, consumer)

    await poll(runner, 4)

    assert service.dead_letters() == []  # the inputs were fine: nothing dead-lettered
    assert consumer.commits == []  # and nothing committed past them
    assert consumer.seeks[-1] == (USED_0, 0)
    assert not runner._health.ready()
    assert "pause" in runner._health.report()["faults"]["consume"]  # type: ignore[index]
    refused = service.metrics.output_refused.labels(FakeService.STATUS_TOPIC)._value.get()
    assert refused == 1

    service.publisher.refuse(lambda _r: False)  # an operator fixes the topic
    await poll(runner, 2)

    assert consumer.committed_offset(USED_0) == 2
    assert sorted(e["user_id"] for e in service.status_events()) == [7, 8]
    assert service.dead_letters() == []
    assert runner._health.ready()
    assert service.metrics.output_refused.labels(FakeService.STATUS_TOPIC)._value.get() == 0


# -- deterministic store refusals are per user -----------------------------------------------


@pytest.mark.parametrize(
    "code",
    [121, 2, 14, 11000],
    ids=["document_validation", "bad_value", "type_mismatch_rev", "duplicate_key"],
)
async def test_deterministic_store_write_errors_retry_forever(code: int) -> None:
    store = FakeCacheStore(a_user(7), a_user(8), a_user(9))
    store.fail_writes_of(8, WriteError("refused", code, {"code": code, "errmsg": "refused"}))
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    consumer.append(used(7, 0), used(8, 1), used(9, 2))
    runner = await started(service, consumer)

    await poll(runner, 1)

    assert consumer.committed_offset(USED_0) == 3
    [letter] = service.dead_letters()
    assert (letter["source_offset"], letter["reason"], letter["error_code"]) == (
        1,
        "store_rejected",
        code,
    )
    assert sorted(e["user_id"] for e in service.status_events()) == [7, 9]
    assert store.write_calls_of(8) == 1  # refused once, never retried
    assert runner._health.ready()


async def test_a_store_error_labelled_retryable_is_retried_not_dead_lettered() -> None:
    store = FakeCacheStore(a_user(7))
    labelled = OperationFailure("x", 999, {"code": 999, "errorLabels": ["RetryableWriteError"]})
    store.fail_next("write_user", labelled)
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    consumer.append(used(7, 0))
    runner = await started(service, consumer)

    await poll(runner, 2)

    assert service.dead_letters() == []
    assert consumer.committed_offset(USED_0) == 1
    assert [e["user_id"] for e in service.status_events()] == [7]


async def test_a_sweep_skips_and_counts_a_user_whose_document_the_store_refuses() -> None:
    store = FakeCacheStore(a_user(7, expired=True), a_user(8, expired=True))
    store.fail_writes_of(8, WriteError("refused", 121, {"code": 121}))
    service = FakeService(store)
    consumer = FakeConsumer(("tick", 0))
    consumer.append(a_tick(0))
    runner = await started(service, consumer)

    await poll(runner, 1)
    await _ticks_done(runner)

    assert consumer.committed_offset(TICK_0) == 1
    assert [e["user_id"] for e in service.status_events()] == [7]
    skipped = service.metrics.sweep_users_skipped.labels("due", "store_rejected")._value.get()
    assert skipped == 1
    assert service.dead_letters() == []


# -- ticks: committed only when durable; their recovery is their own ---------------------------


async def _ticks_done(runner: Runner) -> None:
    import asyncio  # noqa: PLC0415

    await asyncio.wait_for(asyncio.gather(*runner._tick_tasks._tasks.values()), 5)


async def test_a_tick_is_committed_when_its_dead_letter_publish_fails() -> None:
    import asyncio  # noqa: PLC0415

    service = FakeService(FakeCacheStore())
    service.publisher.refuse(
        lambda r: r.topic == FakeService.DEAD_LETTER_TOPIC, PublishRejectedError
    )
    consumer = FakeConsumer(("tick", 0))
    consumer.append(a_tick(0, b"not json"))
    runner = await started(service, consumer)

    await poll(runner, 1)
    await asyncio.sleep(0.2)  # the tick task retries the refused dead letter

    assert consumer.commits == []
    assert TICK_0 in consumer.paused
    assert not runner._health.ready()

    service.publisher.refuse(lambda _r: False)
    await _ticks_done(runner)

    assert consumer.committed_offset(TICK_0) == 1
    assert [d["reason"] for d in service.dead_letters()] == ["not_json"]
    assert runner._health.ready()


async def test_a_finished_tick_resets_the_runners_back_off_and_readiness() -> None:
    store = FakeCacheStore(a_user(7))
    store.fail_next("find_users", StoreUnavailableError("MongoDB is electing"), times=50)
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0), ("tick", 0))
    consumer.append(used(7, 0))
    runner = await started(service, consumer)

    await poll(runner, 1)  # the batch fails: the consume loop backs off, not ready
    assert "consume" in runner._health.faults
    consumer.append(a_tick(0))
    consumer.paused.add(USED_0)  # only the tick is fetched next
    await poll(runner, 1)
    await _ticks_done(runner)

    assert consumer.committed_offset(TICK_0) == 1
    assert "consume" in runner._health.faults  # the tick's success is not the loop's
    assert not runner._health.ready()


async def test_a_revoked_tick_partition_left_its_fault_and_kept_the_replica_not_ready() -> None:
    import asyncio  # noqa: PLC0415

    service = FakeService(FakeCacheStore())
    service.publisher.refuse(
        lambda r: r.topic == FakeService.DEAD_LETTER_TOPIC, PublishRejectedError
    )
    consumer = FakeConsumer(("tick", 0))
    consumer.append(a_tick(0, b"not json"))
    runner = await started(service, consumer)
    await poll(runner, 1)
    await asyncio.sleep(0.1)  # the tick task waits through the refused dead letter
    assert "tick:tick-0" in runner._health.faults

    consumer.partitions.clear()
    await runner.on_revoked({TICK_0})

    assert runner._health.faults == {}
    assert runner._health.ready()
