"""Every lookup the service sends, against a cache collection whose ``user_id`` index is
*unique*, as an operator's refresher may have made it: the answers are those of a plain
index (``tests/store/test_operations*.py``), and the service's own ``create_index`` of
``user_id_1`` is not what makes them right.

MongoDB indexes null and a missing field under one key, so a unique ``user_id`` index
admits one document without a number there; the data below has exactly one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from consumer.adapters.mongo_sweeps import due_query, shard_filter, unreadable_query
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from tests.store.conftest import Document

T0 = datetime(2030, 1, 1, tzinfo=UTC)
USERS = 300


def _user(user_id: int) -> Document:
    due = user_id % 10 == 0
    return {
        "_id": f"doc-{user_id}",
        "user_id": user_id,
        "passes": [{"pass_uuid": f"p-{user_id}", "status": "USABLE"}],
        "next_check_at": T0 - timedelta(minutes=1) if due else T0 + timedelta(days=1),
        "pass_status_checked_at": T0 - timedelta(days=1),
    }


UNREADABLE: list[Document] = [
    {"_id": "string", "user_id": "17"},
    {"_id": "null", "user_id": None},
    {"_id": "date", "user_id": T0},
]
NOT_DUE = {"next_check_at": T0 + timedelta(days=1), "pass_status_checked_at": T0}


@pytest.fixture
async def cache(store_db: AsyncDatabase[Document]) -> Any:
    """The cache with a unique ``user_id`` index made before the service's indexes, in
    shuffled insertion order (so that index order is not insertion order)."""
    coll = store_db["bytemark_tickets_cache"]
    await coll.create_index([("user_id", ASCENDING)], name="user_id_1", unique=True)
    await coll.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
    users = [_user(u) for u in range(1, USERS + 1)]
    await coll.insert_many(users[1::2] + [{**d, **NOT_DUE} for d in UNREADABLE] + users[::2])
    return coll


async def _ids(cursor: Any) -> list[Any]:
    return [doc["_id"] async for doc in cursor]


async def test_find_user_by_user_id(cache: Any) -> None:
    """find_user: equality finds the one document; a double equal to it too."""
    assert await _ids(cache.find({"user_id": 42})) == ["doc-42"]
    assert await _ids(cache.find({"user_id": 42.0})) == ["doc-42"]
    assert await _ids(cache.find({"user_id": USERS + 1})) == []


async def test_find_users_with_in(cache: Any) -> None:
    """find_users: ``$in`` returns the listed users present."""
    found = await _ids(cache.find({"user_id": {"$in": [5, 7, 7, USERS + 5, "5"]}}))
    assert sorted(found) == ["doc-5", "doc-7"]


async def test_all_users_in_user_id_order(cache: Any) -> None:
    """all_users / users_after: sorted by ``user_id`` both ways, a page after a value."""
    numbers = [f"doc-{u}" for u in range(1, USERS + 1)]
    ascending = await _ids(cache.find({}).sort("user_id", ASCENDING))
    # BSON order: null, numbers, strings, dates
    assert ascending == ["null", *numbers, "string", "date"]
    descending = await _ids(cache.find({}).sort("user_id", DESCENDING))
    assert descending == list(reversed(ascending))

    page = cache.find({"$and": [{"user_id": {"$gt": 250}}]}).sort("user_id", ASCENDING).limit(20)
    assert await _ids(page) == [f"doc-{u}" for u in range(251, 271)]
    typed = cache.find({"$and": [{"user_id": {"$type": "number"}}, *shard_filter(1, 3)]})
    assert await _ids(typed.sort("user_id", ASCENDING).limit(3)) == ["doc-1", "doc-4", "doc-7"]


async def test_unreadable_users(cache: Any) -> None:
    """unreadable_users: the documents whose ``user_id`` is null or not a number."""
    assert sorted(await _ids(cache.find(unreadable_query()))) == ["date", "null", "string"]


async def test_due_users_and_due_user(cache: Any) -> None:
    """due_users / due_user: the due query alone and with one ``user_id``."""
    due = sorted(await _ids(cache.find(due_query(T0, 0, 1))))
    assert due == sorted(f"doc-{u}" for u in range(10, USERS + 1, 10))
    one = {"$and": [due_query(T0, 0, 1), {"user_id": 20}]}
    assert await _ids(cache.find(one)) == ["doc-20"]
    assert await _ids(cache.find({"$and": [due_query(T0, 0, 1), {"user_id": 21}]})) == []


async def test_service_create_index_beside_a_unique_one_is_refused(cache: Any) -> None:
    """The service's ``create_index(user_id_1)`` (not unique) where a unique index of that
    name exists: MongoDB refuses it (IndexKeySpecsConflict 86 or IndexOptionsConflict
    85), so the service must take the operator's index as it is."""
    with pytest.raises(OperationFailure) as raised:
        await cache.create_index([("user_id", ASCENDING)], name="user_id_1")
    assert raised.value.code in (85, 86)
