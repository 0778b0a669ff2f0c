"""The store adapter's writes and batch reads against the real server: a conditional write
applies while the passes are as read and is refused after a change; outboxes are cleared in
bulk however many; a batch read stays within its byte budget; a document the server or the
driver refuses becomes a non-retriable :class:`DocumentRejectedError` naming the user.

The server behaviours underneath (operators, atomicity, costs) are stated in ``tests/store``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from consumer.domain.events import Cause, CauseType
from consumer.domain.outbox import OUTBOX, OUTBOX_RELAY, OUTBOX_SINCE
from consumer.domain.user_update import UserUpdate, plan_user_update
from consumer.errors import DocumentRejectedError, TransientError
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.integration.factories import a_pass, a_user
from tests.unit.fakes import STAMP

CAUSE = Cause(CauseType.TICK, "test-tick")


@pytest.fixture
async def store_for(mongodb_uri: str, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[Any]:
    """``store_for(**settings)``: a MongoCacheStore on this test's database."""
    clients = []

    def make(**extra: str) -> MongoCacheStore:
        env = {
            "PASS_STATUS_MONGODB_URI": mongodb_uri,
            "PASS_STATUS_MONGODB_DATABASE": mongo_db.name,
        }
        settings = Settings.from_env(
            {**env, **{f"PASS_STATUS_{k.upper()}": v for k, v in extra.items()}}
        )
        client = make_client(settings)
        clients.append(client)
        return MongoCacheStore(client, settings, Metrics(CollectorRegistry()))

    yield make
    for client in clients:
        await client.close()


def _expiring_plan(doc: Document, now: datetime) -> UserUpdate:
    return plan_user_update(doc, [], now, CAUSE, relaying=STAMP)


async def test_write_applies_while_the_passes_are_as_read(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    await mongo_db["bytemark_tickets_cache"].insert_one(
        a_user(1, [a_pass(expires_in=timedelta(hours=-1), now=now)])
    )
    store: MongoCacheStore = store_for()
    read = await store.find_user(1)
    assert read is not None

    assert await store.write_user(read, _expiring_plan(read, now), now) is True

    doc = await mongo_db["bytemark_tickets_cache"].find_one({"user_id": 1})
    assert doc is not None
    assert doc["passes"][0]["status"] == "EXPIRED"
    assert [e["to_status"] for e in doc[OUTBOX]] == ["EXPIRED"]
    assert doc[OUTBOX_RELAY] == STAMP.key  # the relay that publishes it
    assert doc.get(OUTBOX_SINCE) is None


async def test_write_is_refused_after_a_concurrent_change(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_one(a_user(1, [a_pass(expires_in=timedelta(hours=-1), now=now)]))
    store: MongoCacheStore = store_for()
    read = await store.find_user(1)
    assert read is not None
    await cache.update_one({"user_id": 1}, {"$set": {"passes.0.status": "USING"}})

    assert await store.write_user(read, _expiring_plan(read, now), now) is False

    doc = await cache.find_one({"user_id": 1})
    assert doc is not None
    assert doc["passes"][0]["status"] == "USING"
    assert OUTBOX not in doc


async def test_write_of_a_document_without_passes_requires_them_still_absent(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_one({"user_id": 7})
    store: MongoCacheStore = store_for()
    read = await store.find_user(7)
    assert read is not None
    plan = _expiring_plan(read, now)

    assert await store.write_user(read, plan, now) is True
    await cache.update_one({"user_id": 7}, {"$set": {"passes": []}})
    assert await store.write_user(read, plan, now) is False


async def test_clearing_many_outboxes_completes_in_bulk(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    # More documents than one command's statements FerretDB 1.24 could serve (100), and
    # every third outbox already emptied by another relay, so the fallback steps run too.
    count = 150
    now = datetime.now(UTC)
    entries = {i: [{"event_id": f"e{i}", "user_id": i}] for i in range(count)}
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_many(
        [
            {"_id": f"d{i}", "user_id": i, OUTBOX: entries[i], OUTBOX_SINCE: now}
            for i in range(count)
        ]
    )
    for i in range(0, count, 3):
        await cache.update_one({"_id": f"d{i}"}, {"$set": {OUTBOX: [], OUTBOX_SINCE: None}})
    # And one outbox gained an entry since it was published: that entry and its marker stay.
    await cache.update_one({"_id": "d1"}, {"$push": {OUTBOX: {"event_id": "late"}}})
    store: MongoCacheStore = store_for()

    await asyncio.wait_for(
        store.clear_outbox([(f"d{i}", entries[i]) for i in range(count)]), timeout=120
    )

    left = [
        (doc["_id"], doc[OUTBOX], doc[OUTBOX_SINCE] is not None)
        async for doc in cache.find({"$or": [{OUTBOX: {"$ne": []}}, {OUTBOX_SINCE: {"$ne": None}}]})
    ]
    assert left == [("d1", [{"event_id": "late"}], True)]
    assert await cache.count_documents({}) == count


async def _rounds(store: MongoCacheStore, user_ids: list[int]) -> list[dict[int, Document]]:
    return [batch async for batch in store.find_users(user_ids)]


def _bson_size(doc: Document) -> int:
    return len(bson.encode(doc))


async def test_find_users_reads_in_rounds_within_the_byte_budget(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    # Eight users of about 300 KB each and a budget of 1 MB: no round may hold more than
    # the budget, so they come in rounds of three (and every user exactly once).
    filler = "x" * 300_000
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_many([a_user(i, [a_pass()], filler=filler) for i in range(1, 9)])
    store: MongoCacheStore = store_for(read_batch_max_bytes="1000000")

    rounds = await _rounds(store, [*range(1, 9), 99])

    assert [len(r) for r in rounds] == [3, 3, 2]
    assert sorted(uid for r in rounds for uid in r) == list(range(1, 9))
    for batch in rounds:
        assert sum(_bson_size(d) for d in batch.values()) <= 1_000_000


async def test_find_users_gives_a_document_larger_than_the_budget_alone(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_many(
        [
            a_user(1, [a_pass()]),
            a_user(2, [a_pass()], filler="x" * 200_000),
            a_user(3, [a_pass()]),
        ]
    )
    store: MongoCacheStore = store_for(read_batch_max_bytes="100000")

    rounds = await _rounds(store, [1, 2, 3])

    assert [sorted(r) for r in rounds] == [[1], [2], [3]]


async def test_find_users_in_one_round_under_the_default_budget(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_many([a_user(i, [a_pass()]) for i in range(1, 501)])
    store: MongoCacheStore = store_for()

    rounds = await _rounds(store, list(range(1, 501)))

    assert [sorted(r) for r in rounds] == [list(range(1, 501))]


async def test_a_write_too_large_to_send_is_rejected_for_good_naming_the_user(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    # Two expired passes with 3 MB identifiers (a 12 MB document): the write's condition
    # (the passes as read) and its two outbox events make an update of over 16 MB, which
    # the driver refuses to send. On MongoDB the result would be refused too (code 17419).
    now = datetime.now(UTC)
    passes = [
        a_pass(expires_in=timedelta(hours=-1), now=now, pass_uuid=f"{n}" * 3_000_000)
        for n in (1, 2)
    ]
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_one(a_user(42, passes))
    store: MongoCacheStore = store_for()
    read = await store.find_user(42)
    assert read is not None

    with pytest.raises(DocumentRejectedError) as caught:
        await store.write_user(read, _expiring_plan(read, now), now)

    assert caught.value.user_id == 42
    assert caught.value.reason == "store_rejected"
    assert not caught.value.retriable
    assert not isinstance(caught.value, TransientError)
    doc = await cache.find_one({"user_id": 42}, {"passes.status": 1})
    assert doc is not None
    assert [p["status"] for p in doc["passes"]] == ["USABLE", "USABLE"]


async def test_a_value_bson_cannot_hold_is_rejected_for_good_naming_the_user(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    cache = mongo_db["bytemark_tickets_cache"]
    await cache.insert_one(a_user(5, [a_pass(expires_in=timedelta(hours=-1), now=now)]))
    store: MongoCacheStore = store_for()
    read = await store.find_user(5)
    assert read is not None
    plan = _expiring_plan(read, now)
    unencodable = UserUpdate(
        user_id=plan.user_id,
        first_use_sets=plan.first_use_sets,
        evaluation=plan.evaluation,
        outbox=({**plan.outbox[0], "extra": {1, 2}},),
        rejected=plan.rejected,
        next_check_at=plan.next_check_at,
        relaying=plan.relaying,
        writes_document=True,
    )

    with pytest.raises(DocumentRejectedError) as caught:
        await store.write_user(read, unencodable, now)

    assert caught.value.user_id == 5


async def test_a_bulk_of_writes_tells_each_written_from_each_conflicted(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    cache = mongo_db["bytemark_tickets_cache"]
    for user_id in (1, 2, 3):
        await cache.insert_one(a_user(user_id, [a_pass(expires_in=timedelta(hours=-1), now=now)]))
    store: MongoCacheStore = store_for()
    reads = [await store.find_user(u) for u in (1, 2, 3)]
    assert all(r is not None for r in reads)
    await cache.update_one({"user_id": 2}, {"$set": {"passes.0.status": "USING"}})

    outcomes = await store.write_users([(r, _expiring_plan(r, now)) for r in reads if r], now)

    assert outcomes == [True, False, True]
    statuses = {d["user_id"]: d["passes"][0]["status"] async for d in cache.find({})}
    assert statuses == {1: "EXPIRED", 2: "USING", 3: "EXPIRED"}


async def test_a_bulk_with_a_value_bson_cannot_hold_fails_that_user_alone(
    mongo_db: AsyncDatabase[Document], store_for: Any
) -> None:
    now = datetime.now(UTC)
    cache = mongo_db["bytemark_tickets_cache"]
    for user_id in (1, 2):
        await cache.insert_one(a_user(user_id, [a_pass(expires_in=timedelta(hours=-1), now=now)]))
    store: MongoCacheStore = store_for()
    first, second = await store.find_user(1), await store.find_user(2)
    assert first is not None
    assert second is not None
    plan = _expiring_plan(second, now)
    unencodable = UserUpdate(
        user_id=plan.user_id,
        first_use_sets=plan.first_use_sets,
        evaluation=plan.evaluation,
        outbox=({**plan.outbox[0], "extra": {1, 2}},),
        rejected=plan.rejected,
        next_check_at=plan.next_check_at,
        relaying=plan.relaying,
        writes_document=True,
    )

    outcomes = await store.write_users(
        [(first, _expiring_plan(first, now)), (second, unencodable)], now
    )

    assert outcomes[0] is True
    assert isinstance(outcomes[1], DocumentRejectedError)
    assert outcomes[1].user_id == 2
    statuses = {d["user_id"]: d["passes"][0]["status"] async for d in cache.find({})}
    assert statuses == {1: "EXPIRED", 2: "USABLE"}
