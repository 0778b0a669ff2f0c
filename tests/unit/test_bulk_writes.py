"""A batch's conditional writes go to the store in one unordered bulk (issue 20).

The fake store's bulk behaves like MongoDB's unordered bulk: every write is tried, one the
store refuses fails alone, the others apply. A conflicted user is re-read and re-evaluated
alone; a refused user is handled as a single write's refusal was (dead-lettered).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from consumer.adapters.mongo import store_error
from consumer.adapters.mongo_bulk import write_users
from consumer.domain.events import Cause, CauseType
from consumer.domain.user_update import plan_user_update
from consumer.errors import DocumentRejectedError, StoreUnavailableError
from pymongo.errors import BulkWriteError

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
PARTITION = TopicPartition("used", 0)


def a_user(user_id: int) -> dict[str, Any]:
    return a_user_doc(user_id, NOW)


def used(user_id: int, offset: int) -> FakeMessage:
    return ticket_used_message(user_id, offset, NOW)


async def _consume(store: FakeCacheStore, users: list[int]) -> tuple[FakeService, FakeConsumer]:
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    fault = await runner._handle_batch({PARTITION: [used(u, i) for i, u in enumerate(users)]})
    assert fault is None
    return service, consumer


async def test_a_batch_of_many_users_is_written_in_one_bulk() -> None:
    users = list(range(1, 41))  # more users than the handler's concurrency (4)
    store = FakeCacheStore(*(a_user(u) for u in users))

    service, consumer = await _consume(store, users)

    assert store.bulk_sizes == [40]
    assert store.calls.get("find_user", 0) == 0  # no conflict, no re-read
    assert all(store.doc(f"d{u}")["passes"][0]["status"] == "USING" for u in users)
    assert sorted(e["user_id"] for e in service.status_events()) == users
    assert consumer.commits == [{PARTITION: 40}]


async def test_a_user_refused_in_the_bulk_is_dead_lettered_alone_and_the_rest_apply() -> None:
    store = FakeCacheStore(*(a_user(u) for u in (1, 2, 3)))
    store.fail_writes_of(2, DocumentRejectedError("user 2: too large", user_id=2, code=17419))

    service, consumer = await _consume(store, [1, 2, 3])

    assert store.bulk_sizes == [3]
    assert store.write_calls_of(2) == 1  # refused once, not retried
    assert [(d["source_offset"], d["reason"]) for d in service.dead_letters()] == [
        (1, "store_rejected")
    ]
    # unordered: the write after the refused one was applied too
    assert [store.doc(f"d{u}")["passes"][0]["status"] for u in (1, 2, 3)] == [
        "USING",
        "USABLE",
        "USING",
    ]
    assert sorted(e["user_id"] for e in service.status_events()) == [1, 3]
    assert consumer.commits == [{PARTITION: 3}]


async def test_only_the_conflicted_user_is_read_again_and_re_evaluated() -> None:
    store = FakeCacheStore(*(a_user(u) for u in (1, 2, 3)))

    async def refresher_rewrites_user_2() -> None:
        changed = a_user(2)["passes"] + [
            {"pass_uuid": "new", "status": "USABLE", "payload": {"expiration": "2999-01-01"}}
        ]
        store.cache.update_one({"_id": "d2"}, {"$set": {"passes": changed}})

    store.before("write_users", refresher_rewrites_user_2)  # between the read and the bulk

    service, consumer = await _consume(store, [1, 2, 3])

    assert store.bulk_sizes == [3]
    assert store.calls["find_user"] == 1  # user 2 alone, re-read
    assert store.write_calls_of(2) == 2  # the bulk's write (conflict), then its own
    passes: list[Mapping[str, Any]] = store.doc("d2")["passes"]
    assert [p["status"] for p in passes] == ["USING", "USABLE"]  # the refresher's pass kept
    assert sorted(e["user_id"] for e in service.status_events()) == [1, 2, 3]
    assert consumer.commits == [{PARTITION: 3}]


async def test_a_failed_bulk_fails_the_batch_uncommitted_and_its_retry_applies_all() -> None:
    store = FakeCacheStore(*(a_user(u) for u in (1, 2)))
    store.fail_next("write_users", StoreUnavailableError("store down"))
    service = FakeService(store)
    consumer = FakeConsumer(("used", 0))
    runner = a_runner(service, consumer, SETTINGS)
    await runner.on_assigned(consumer.assignment())
    batch = {PARTITION: [used(1, 0), used(2, 1)]}

    fault = await runner._handle_batch(batch)
    assert fault is not None
    assert consumer.commits == []
    assert await runner._handle_batch(batch) is None

    assert consumer.commits == [{PARTITION: 2}]
    assert sorted(e["user_id"] for e in service.status_events()) == [1, 2]
    assert service.dead_letters() == []


class _UnorderedBulk:
    """A collection whose unordered bulk reports MongoDB's way: each refused operation in
    ``writeErrors`` with its index and code, the rest applied and counted in ``nMatched``;
    ``stamped`` holds the ``_id``s a read by the bulk's stamp finds."""

    def __init__(self, refused: dict[int, int], conflicted: set[int]) -> None:
        self.refused = refused
        self.conflicted = conflicted
        self.bulks: list[list[Any]] = []
        self.reads: list[Mapping[str, Any]] = []
        self.stamped: list[Any] = []

    async def bulk_write(self, ops: list[Any], *, ordered: bool) -> Any:
        assert ordered is False
        self.bulks.append(ops)
        applied = [i for i in range(len(ops)) if i not in self.refused and i not in self.conflicted]
        self.stamped = [ops[i]._filter["_id"] for i in applied]
        details = {
            "writeErrors": [
                {"index": i, "code": code, "errmsg": f"refused {code}"}
                for i, code in sorted(self.refused.items())
            ],
            "writeConcernErrors": [],
            "nMatched": len(applied),
        }
        raise BulkWriteError(details)

    def find(self, query: Mapping[str, Any], projection: Mapping[str, Any]) -> Any:  # noqa: ARG002
        self.reads.append(query)

        async def found() -> Any:
            for doc_id in self.stamped:
                yield {"_id": doc_id}

        return found()


async def test_each_refused_operation_of_a_bulk_fails_its_user_alone_with_the_server_code() -> None:
    docs = [{**a_user(u), "_id": f"d{u}"} for u in (1, 2, 3, 4)]
    now = datetime.now(UTC)
    writes = [(d, plan_user_update(d, [], now, Cause(CauseType.TICK, "t"))) for d in docs]
    bulk = _UnorderedBulk(refused={1: 17419, 3: 11600}, conflicted={2})

    async def never_alone(*_: Any) -> bool:
        raise AssertionError("no single write expected")

    outcomes = await write_users(
        bulk,  # type: ignore[arg-type]
        lambda _op: contextlib.nullcontext(),
        writes,
        now,
        never_alone,
        store_error,
    )

    assert len(bulk.bulks) == 1  # one command for all four
    assert outcomes[0] is True
    assert outcomes[2] is False  # matched nothing: found by the one read by stamp
    assert len(bulk.reads) == 1
    refused = outcomes[1]
    assert isinstance(refused, DocumentRejectedError)
    assert (refused.user_id, refused.code) == (2, 17419)
    # InterruptedAtShutdown: the store is going away, not this user's fault
    assert isinstance(outcomes[3], StoreUnavailableError)
