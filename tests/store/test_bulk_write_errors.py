"""How MongoDB reports a write command with failing statements: which statements are
applied, the index and code of each failure, and the counts of the rest.

The service's unordered ``bulk_write`` of conditional updates (``clear_outbox``,
``reject_outbox_entries``) and the failure policy (which classifies by server code) rely
on it: an unordered command applies every statement but the failing ones and reports each
failure at its index in the command; an ordered one stops at the first failure, applied
up to it. PyMongo raises ``BulkWriteError`` whose ``details`` carry ``writeErrors``
(``index``, ``code``, ``errmsg``) and the counts ``nMatched``, ``nModified``,
``nInserted``, ``nUpserted``, ``upserted``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from tests.store.conftest import Document

TYPE_MISMATCH = 14
CONFLICTING_UPDATE_OPERATORS = 40
DUPLICATE_KEY = 11000


def _cache(db: AsyncDatabase[Document]) -> Any:
    return db["bytemark_tickets_cache"]


async def _seed_with_a_string_at_2(cache: Any) -> None:
    await cache.insert_many(
        [{"_id": 1, "rev": 1}, {"_id": 2, "rev": "not a number"}, {"_id": 3, "rev": 1}]
    )


def _inc_each(ids: list[int]) -> list[UpdateOne]:
    return [UpdateOne({"_id": i}, {"$inc": {"rev": 1}}) for i in ids]


async def _revs(cache: Any) -> dict[int, Any]:
    return {doc["_id"]: doc["rev"] async for doc in cache.find({}, {"rev": 1})}


def _failures(error: BulkWriteError) -> list[tuple[int, int]]:
    return [(e["index"], e["code"]) for e in error.details["writeErrors"]]


async def test_unordered_bulk_update_applies_the_rest_past_a_failure(
    store_db: AsyncDatabase[Document],
) -> None:
    """Three ``UpdateOne``s, the second an ``$inc`` on a string: the first and third are
    applied, the error is at index 1 with code 14, and ``nModified`` is 2."""
    cache = _cache(store_db)
    await _seed_with_a_string_at_2(cache)

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(_inc_each([1, 2, 3]), ordered=False)

    details = raised.value.details
    assert _failures(raised.value) == [(1, TYPE_MISMATCH)]
    assert isinstance(details["writeErrors"][0]["errmsg"], str)
    assert (details["nMatched"], details["nModified"]) == (2, 2)
    assert await _revs(cache) == {1: 2, 2: "not a number", 3: 2}


async def test_ordered_bulk_update_stops_at_the_failure_with_its_index(
    store_db: AsyncDatabase[Document],
) -> None:
    """Ordered, the same bulk applies the first update only and reports index 1."""
    cache = _cache(store_db)
    await _seed_with_a_string_at_2(cache)

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(_inc_each([1, 2, 3]), ordered=True)

    details = raised.value.details
    assert _failures(raised.value) == [(1, TYPE_MISMATCH)]
    assert (details["nMatched"], details["nModified"]) == (1, 1)
    assert await _revs(cache) == {1: 2, 2: "not a number", 3: 1}


async def test_unordered_bulk_update_reports_every_failure_at_its_index(
    store_db: AsyncDatabase[Document],
) -> None:
    """Failures at indexes 1 and 3 of five, a statement matching nothing at 4: each
    failure keeps its own index, the others are applied and counted."""
    cache = _cache(store_db)
    await cache.insert_many(
        [{"_id": 1, "rev": 1}, {"_id": 2, "rev": "x"}, {"_id": 3, "rev": 1}, {"_id": 4, "rev": []}]
    )

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(_inc_each([1, 2, 3, 4, 99]), ordered=False)

    details = raised.value.details
    assert _failures(raised.value) == [(1, TYPE_MISMATCH), (3, TYPE_MISMATCH)]
    assert (details["nMatched"], details["nModified"]) == (2, 2)
    assert await _revs(cache) == {1: 2, 2: "x", 3: 2, 4: []}


async def test_unordered_bulk_with_upserts_reports_their_indexes_past_a_failure(
    store_db: AsyncDatabase[Document],
) -> None:
    """An upsert after a failing statement is applied; ``upserted`` names the index of
    the statement that inserted, in the whole bulk."""
    cache = _cache(store_db)
    await _seed_with_a_string_at_2(cache)

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(
            [
                UpdateOne({"_id": 2}, {"$inc": {"rev": 1}}),
                UpdateOne({"_id": 10}, {"$set": {"rev": 10}}, upsert=True),
                UpdateOne({"_id": 1}, {"$inc": {"rev": 1}}),
            ],
            ordered=False,
        )

    details = raised.value.details
    assert _failures(raised.value) == [(0, TYPE_MISMATCH)]
    assert details["upserted"] == [{"index": 1, "_id": 10}]
    assert (details["nMatched"], details["nModified"], details["nUpserted"]) == (1, 1, 1)
    assert await _revs(cache) == {1: 2, 2: "not a number", 3: 1, 10: 10}


async def test_unordered_insert_many_inserts_the_rest_past_a_taken_id(
    store_db: AsyncDatabase[Document],
) -> None:
    """``insert_many(ordered=False)`` with a taken ``_id`` at index 1: the others are
    inserted, the error is 11000 at index 1 with the ``_id`` index's key."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 2, "rev": 0})

    with pytest.raises(BulkWriteError) as raised:
        await cache.insert_many([{"_id": i, "rev": 1} for i in (1, 2, 3)], ordered=False)

    details = raised.value.details
    assert _failures(raised.value) == [(1, DUPLICATE_KEY)]
    error = details["writeErrors"][0]
    assert (error["keyPattern"], error["keyValue"]) == ({"_id": 1}, {"_id": 2})
    assert details["nInserted"] == 2
    assert await _revs(cache) == {1: 1, 2: 0, 3: 1}


async def test_ordered_insert_many_stops_at_a_taken_id(
    store_db: AsyncDatabase[Document],
) -> None:
    """Ordered, the inserts stop at the taken ``_id``: one inserted, error at index 1."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 2, "rev": 0})

    with pytest.raises(BulkWriteError) as raised:
        await cache.insert_many([{"_id": i, "rev": 1} for i in (1, 2, 3)], ordered=True)

    assert _failures(raised.value) == [(1, DUPLICATE_KEY)]
    assert raised.value.details["nInserted"] == 1
    assert await _revs(cache) == {1: 1, 2: 0}


async def test_mixed_unordered_bulk_counts_inserts_and_updates_past_failures(
    store_db: AsyncDatabase[Document],
) -> None:
    """A bulk of inserts and updates (PyMongo sends one command per run of a kind):
    failures keep their index in the whole bulk, the rest are applied."""
    cache = _cache(store_db)
    await _seed_with_a_string_at_2(cache)

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(
            [
                InsertOne({"_id": 3, "rev": 0}),
                InsertOne({"_id": 4, "rev": 0}),
                UpdateOne({"_id": 2}, {"$inc": {"rev": 1}}),
                UpdateOne({"_id": 4}, {"$inc": {"rev": 1}}),
            ],
            ordered=False,
        )

    details = raised.value.details
    assert _failures(raised.value) == [(0, DUPLICATE_KEY), (2, TYPE_MISMATCH)]
    assert (details["nInserted"], details["nMatched"], details["nModified"]) == (1, 1, 1)
    assert await _revs(cache) == {1: 1, 2: "not a number", 3: 1, 4: 1}


async def test_ordered_insert_many_stops_at_a_taken_id_past_the_first_batch(
    store_db: AsyncDatabase[Document],
) -> None:
    """An ordered insert of 250 documents whose 151st takes a used ``_id`` inserts the 150
    before it and none after, however the server batches them."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 150, "rev": 0})

    with pytest.raises(BulkWriteError) as raised:
        await cache.insert_many([{"_id": i, "rev": 1} for i in range(250)], ordered=True)

    assert _failures(raised.value) == [(150, DUPLICATE_KEY)]
    assert raised.value.details["nInserted"] == 150
    assert await cache.count_documents({}) == 151
    assert await cache.count_documents({"_id": {"$gt": 150}}) == 0


async def test_unordered_bulk_with_a_malformed_update_applies_the_others(
    store_db: AsyncDatabase[Document],
) -> None:
    """An update document the server refuses as written (two operators on one path:
    ConflictingUpdateOperators, 40) fails alone, at its index; the statements around it
    are applied (a malformed statement is that statement's write error, not the
    command's)."""
    cache = _cache(store_db)
    await cache.insert_many([{"_id": i, "rev": 1} for i in (1, 2, 3)])

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(
            [
                UpdateOne({"_id": 1}, {"$inc": {"rev": 1}}),
                UpdateOne({"_id": 2}, {"$set": {"rev": 5}, "$inc": {"rev": 1}}),
                UpdateOne({"_id": 3}, {"$inc": {"rev": 1}}),
            ],
            ordered=False,
        )

    assert _failures(raised.value) == [(1, CONFLICTING_UPDATE_OPERATORS)]
    assert raised.value.details["nModified"] == 2
    assert await _revs(cache) == {1: 2, 2: 1, 3: 2}
