"""Unique-index violations: MongoDB answers every one with code 11000 (``DuplicateKey``),
whatever the operation (insert, update, upsert, a bulk, building the index over existing
duplicates), and names the index's key (``keyPattern``) and the duplicated value
(``keyValue``). An operator's cache collection may carry a unique ``user_id`` index; the
failure policy classifies these refusals by that code.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.store.conftest import Document

DUPLICATE_KEY = 11000
USER_ID_KEY = {"user_id": 1}


async def _unique_cache(db: AsyncDatabase[Document]) -> Any:
    cache = db["bytemark_tickets_cache"]
    await cache.create_index([("user_id", ASCENDING)], name="user_id_1", unique=True)
    await cache.insert_many([{"_id": i, "user_id": i, "rev": 0} for i in (1, 2, 3)])
    return cache


async def _user_ids(cache: Any) -> dict[int, Any]:
    return {doc["_id"]: doc.get("user_id") async for doc in cache.find({})}


def _assert_duplicate_user_id(details: Any, user_id: int) -> None:
    assert details["code"] == DUPLICATE_KEY
    # index builds prefix it ("Index build failed: ... caused by :: E11000 ...")
    assert "E11000 duplicate key error" in details["errmsg"]
    assert (details["keyPattern"], details["keyValue"]) == (USER_ID_KEY, {"user_id": user_id})


async def test_update_one_onto_a_taken_unique_value_raises_duplicate_key(
    store_db: AsyncDatabase[Document],
) -> None:
    """``update_one`` that would give two documents one ``user_id``: 11000, nothing changed."""
    cache = await _unique_cache(store_db)

    with pytest.raises(DuplicateKeyError) as raised:
        await cache.update_one({"_id": 1}, {"$set": {"user_id": 2}})

    assert raised.value.code == DUPLICATE_KEY
    _assert_duplicate_user_id(raised.value.details, 2)
    assert await _user_ids(cache) == {1: 1, 2: 2, 3: 3}


async def test_upsert_onto_a_taken_unique_value_raises_duplicate_key(
    store_db: AsyncDatabase[Document],
) -> None:
    """An upsert whose inserted document takes a used ``user_id``: 11000, nothing inserted."""
    cache = await _unique_cache(store_db)

    with pytest.raises(DuplicateKeyError) as raised:
        await cache.update_one({"_id": 9}, {"$set": {"user_id": 3}}, upsert=True)

    _assert_duplicate_user_id(raised.value.details, 3)
    assert await _user_ids(cache) == {1: 1, 2: 2, 3: 3}


async def test_insert_onto_a_taken_unique_value_names_the_key(
    store_db: AsyncDatabase[Document],
) -> None:
    """``insert_one`` with a used ``user_id``: 11000 with the index's key and value."""
    cache = await _unique_cache(store_db)

    with pytest.raises(DuplicateKeyError) as raised:
        await cache.insert_one({"_id": 9, "user_id": 1})

    _assert_duplicate_user_id(raised.value.details, 1)
    assert await _user_ids(cache) == {1: 1, 2: 2, 3: 3}


async def test_insert_of_a_taken_id_names_the_id_key(store_db: AsyncDatabase[Document]) -> None:
    """A taken ``_id``: 11000 with ``keyPattern {_id: 1}`` and the ``_id``."""
    log = store_db["bytemark_cache_status_check_log"]
    await log.insert_one({"_id": "a"})

    with pytest.raises(DuplicateKeyError) as raised:
        await log.insert_one({"_id": "a"})

    details: Any = raised.value.details
    assert (details["keyPattern"], details["keyValue"]) == ({"_id": 1}, {"_id": "a"})


async def test_unordered_bulk_update_reports_the_duplicate_and_applies_the_rest(
    store_db: AsyncDatabase[Document],
) -> None:
    """In an unordered bulk, the update onto a taken ``user_id`` fails at its index with
    11000 and its key; the updates around it are applied."""
    cache = await _unique_cache(store_db)

    with pytest.raises(BulkWriteError) as raised:
        await cache.bulk_write(
            [
                UpdateOne({"_id": 1}, {"$inc": {"rev": 1}}),
                UpdateOne({"_id": 2}, {"$set": {"user_id": 3}}),
                UpdateOne({"_id": 3}, {"$inc": {"rev": 1}}),
            ],
            ordered=False,
        )

    details = raised.value.details
    assert [e["index"] for e in details["writeErrors"]] == [1]
    _assert_duplicate_user_id(details["writeErrors"][0], 3)
    assert (details["nMatched"], details["nModified"]) == (2, 2)
    revs = {doc["_id"]: doc["rev"] async for doc in cache.find({})}
    assert revs == {1: 1, 2: 0, 3: 1}
    assert await _user_ids(cache) == {1: 1, 2: 2, 3: 3}


async def test_update_many_stops_at_the_document_that_would_duplicate(
    store_db: AsyncDatabase[Document],
) -> None:
    """``update_many`` setting one ``user_id`` on several documents: 11000; at most one
    document holds the value afterwards."""
    cache = await _unique_cache(store_db)

    with pytest.raises(DuplicateKeyError) as raised:
        await cache.update_many({}, {"$set": {"user_id": 7}})

    _assert_duplicate_user_id(raised.value.details, 7)
    assert list((await _user_ids(cache)).values()).count(7) <= 1


async def test_unique_index_over_duplicates_is_refused_with_duplicate_key(
    store_db: AsyncDatabase[Document],
) -> None:
    """Creating a unique index over data that holds a value twice: 11000 with the key and
    value, and no index is left behind."""
    cache = store_db["bytemark_tickets_cache"]
    await cache.insert_many([{"_id": 1, "user_id": 5}, {"_id": 2, "user_id": 5}])

    with pytest.raises(DuplicateKeyError) as raised:
        await cache.create_index([("user_id", ASCENDING)], name="user_id_1", unique=True)

    _assert_duplicate_user_id(raised.value.details, 5)
    names = {index["name"] async for index in await cache.list_indexes()}
    assert names == {"_id_"}
