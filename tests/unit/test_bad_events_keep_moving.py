"""Non-transient errors never kill the consume loop (issue 12, item 3, runner side).

An event whose user cannot be written for good (a document too large, one BSON cannot
encode, any non-retriable error, a bug) is dead-lettered with its error's reason, else
``bad_document``; the other events of its batch apply, and the partition moves on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from bson.errors import InvalidDocument
from consumer.errors import BadDocumentError
from consumer.logs import JsonFormatter
from consumer.schemas import DEAD_LETTER, validator
from pymongo.errors import DocumentTooLarge

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
SETTINGS = RUNNER_SETTINGS


def a_user(user_id: int) -> dict[str, Any]:
    return a_user_doc(user_id, NOW)


def used(user_id: int, offset: int) -> FakeMessage:
    return ticket_used_message(user_id, offset, NOW)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidDocument("cannot encode object"), "store_rejected"),
        (DocumentTooLarge("BSON document too large (16793600 bytes)"), "store_rejected"),
        (BadDocumentError("user 8: document too large to write"), "bad_document"),
    ],
    ids=["invalid_document", "document_too_large", "bad_document_error"],
)
async def test_a_user_that_cannot_be_written_is_dead_lettered_and_the_batch_goes_on(
    error: Exception, reason: str
) -> None:
    store = FakeCacheStore(a_user(7), a_user(8))
    store.fail_writes_of(8, error)
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    batch = {TopicPartition("used", 0): [used(7, 10), used(8, 11), used(7, 12)]}

    fault = await runner._handle_batch(batch)

    assert fault is None
    assert consumer.commits == [{TopicPartition("used", 0): 13}]
    assert consumer.seeks == []
    dead = service.dead_letters()
    assert [(d["source_offset"], d["reason"]) for d in dead] == [(11, reason)]
    validator(DEAD_LETTER)(dead[0])
    assert store.doc("d7")["passes"][0]["status"] == "USING"
    assert [e["user_id"] for e in service.status_events()] == [7]
    assert store.write_calls_of(8) == 1  # skipped, not retried


async def test_an_unexpected_batch_error_isolates_the_record_at_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    store = FakeCacheStore(a_user(7), a_user(8))
    store.fail_next("find_users", RuntimeError("a bug"))  # the whole batch fails once
    store.fail_writes_of(8, RuntimeError("another bug"))
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    batch = {TopicPartition("used", 0): [used(7, 10), used(8, 11)]}

    fault = await runner._handle_batch(batch)

    assert fault is None
    assert consumer.commits == [{TopicPartition("used", 0): 12}]
    assert [(d["source_offset"], d["reason"]) for d in service.dead_letters()] == [
        (11, "internal_error")
    ]
    assert store.doc("d7")["passes"][0]["status"] == "USING"
    # A defect is logged with what it hit and where it was raised, for the person paged.
    (failed,) = [
        orjson.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.getMessage() == "user_failed"
    ]
    assert (failed["user_id"], failed["offset"], failed["error_type"]) == (8, 11, "RuntimeError")
    assert "another bug" in failed["stack"]


async def test_a_transient_fault_still_seeks_back_and_commits_nothing() -> None:
    from consumer.errors import StoreUnavailableError  # noqa: PLC0415

    store = FakeCacheStore(a_user(7))
    store.fail_next("find_users", StoreUnavailableError("down"))
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())

    fault = await runner._handle_batch({TopicPartition("used", 0): [used(7, 10), used(7, 11)]})

    assert isinstance(fault, StoreUnavailableError)
    assert consumer.commits == []
    assert consumer.seeks == [(TopicPartition("used", 0), 10)]
    assert service.dead_letters() == []
