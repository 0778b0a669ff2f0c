"""More query and update shapes the service sends: the write whose condition covers the
outbox as read (``write_user`` when it appends to the outbox), the sweeps' queries by
``user_id`` type and order, and the checkpoints of resumable full sweeps
(``consumer/adapters/mongo_sweeps.py``): upserts, replacement, deletion by range, sorted
``find_one`` with an exclusion projection, compound indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Int64
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from tests.store.conftest import Document

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _cache(db: AsyncDatabase[Document]) -> Any:
    return db["bytemark_tickets_cache"]


async def _ids(cursor: Any) -> list[Any]:
    return sorted([doc["_id"] async for doc in cursor])


async def test_equality_to_null_matches_null_and_missing(store_db: AsyncDatabase[Document]) -> None:
    """A condition ``{since: null}`` (the outbox marker read as null) matches a null or a
    missing field, never a date; ``{$exists: false}`` matches the missing field only."""
    cache = _cache(store_db)
    await cache.insert_many(
        [{"_id": "null", "since": None}, {"_id": "missing"}, {"_id": "date", "since": T0}]
    )

    assert await _ids(cache.find({"since": None})) == ["missing", "null"]
    assert await _ids(cache.find({"since": {"$exists": False}})) == ["missing"]
    assert await _ids(cache.find({"since": T0})) == ["date"]


async def test_a_condition_on_several_fields_misses_when_any_changed(
    store_db: AsyncDatabase[Document],
) -> None:
    """write_user appending to the outbox: ``{_id, passes, outbox, since}`` all as read;
    a change to any one of them (a clear of the outbox, a new marker) makes it miss."""
    cache = _cache(store_db)
    passes = [{"pass_uuid": "p", "status": "USABLE"}]
    entry = {"event_id": "e1"}
    read = {"_id": "u", "passes": passes, "outbox": [entry], "since": T0}
    await cache.insert_one(read)
    condition = {"_id": "u", "passes": passes, "outbox": [entry], "since": T0}
    change = {"$push": {"outbox": {"$each": [{"event_id": "e2"}]}}, "$inc": {"rev": 1}}

    # The owner's clear runs between the read and the write: the write must miss.
    await cache.update_one({"_id": "u", "outbox": [entry]}, {"$set": {"outbox": [], "since": None}})
    assert (await cache.update_one(condition, change)).matched_count == 0
    # Re-read, the condition holds the cleared outbox and the null marker: it applies.
    again = {"_id": "u", "passes": passes, "outbox": [], "since": None}
    set_since = {**change, "$set": {"since": T0 + timedelta(seconds=1)}}
    assert (await cache.update_one(again, set_since)).matched_count == 1

    doc = await cache.find_one({"_id": "u"})
    assert doc is not None
    assert (doc["outbox"], doc["since"], doc["rev"]) == (
        [{"event_id": "e2"}],
        T0 + timedelta(seconds=1),
        1,
    )


async def test_due_query_with_never_evaluated_and_shard(store_db: AsyncDatabase[Document]) -> None:
    """Sweeps: ``$and`` of the due ``$or`` (date reached, ``next_check_at`` unset, never
    evaluated) and a ``$mod`` shard of ``user_id``."""
    cache = _cache(store_db)
    checked = {"pass_status_checked_at": T0}
    await cache.insert_many(
        [
            {"_id": "past", "user_id": 2, "next_check_at": T0, **checked},
            {"_id": "future", "user_id": 4, "next_check_at": T0 + timedelta(days=1), **checked},
            {"_id": "unset", "user_id": 6, **checked},
            {"_id": "null", "user_id": 8, "next_check_at": None, **checked},
            {"_id": "never", "user_id": 10, "next_check_at": None},
            {"_id": "other_shard", "user_id": 3, "next_check_at": T0, **checked},
        ]
    )
    due = {
        "$or": [
            {"next_check_at": {"$lte": T0}},
            {"next_check_at": {"$exists": False}},
            {"pass_status_checked_at": {"$exists": False}},
        ]
    }

    found = await _ids(cache.find({"$and": [due, {"user_id": {"$mod": [2, 0]}}]}))

    assert found == ["never", "past", "unset"]


async def test_user_id_by_type_and_after_a_value_in_order(
    store_db: AsyncDatabase[Document],
) -> None:
    """Full sweeps: ``{$type: "number"}`` matches every numeric type, ``{$not: {$type:
    "number"}}`` the rest (missing included); ``{$gt: n}`` sorted resumes after ``n``."""
    cache = _cache(store_db)
    await cache.insert_many(
        [
            {"_id": "int", "user_id": 1},
            {"_id": "long", "user_id": Int64(3)},
            {"_id": "double", "user_id": 2.0},
            {"_id": "string", "user_id": "4"},
            {"_id": "null", "user_id": None},
            {"_id": "missing"},
        ]
    )

    assert await _ids(cache.find({"user_id": {"$type": "number"}})) == ["double", "int", "long"]
    assert await _ids(cache.find({"user_id": {"$not": {"$type": "number"}}})) == [
        "missing",
        "null",
        "string",
    ]
    after = cache.find({"$and": [{"user_id": {"$gt": 1}}]}).sort("user_id", ASCENDING)
    assert [doc["_id"] async for doc in after] == ["double", "long"]


async def test_checkpoint_upserts_replacement_and_range_deletion(
    store_db: AsyncDatabase[Document],
) -> None:
    """Sweep checkpoints: ``replace_one(upsert)`` inserts then replaces (idempotent);
    ``find_one`` sorted by ``seq`` descending with ``{entries: 0}`` returns the last
    chunk without its entries; ``delete_many`` by ``$gt`` removes the later chunks;
    ``update_one(upsert)`` on a string ``_id`` creates the done marker once."""
    chunks = store_db["pass_status_sweeps"]
    await chunks.create_index([("sweep", ASCENDING), ("seq", ASCENDING)], name="sweep_seq_1")
    for seq in range(4):
        body = {"sweep": "s1", "seq": seq, "batch_end": seq < 3, "entries": [{"u": seq}]}
        for _ in range(2):
            await chunks.replace_one({"_id": f"s1/{seq:010d}"}, body, upsert=True)
    assert await chunks.count_documents({"sweep": "s1"}) == 4

    last = await chunks.find_one(
        {"sweep": "s1", "batch_end": True}, {"entries": 0}, sort=[("seq", -1)]
    )
    assert last == {"_id": "s1/0000000002", "sweep": "s1", "seq": 2, "batch_end": True}
    deleted = await chunks.delete_many({"sweep": "s1", "seq": {"$gt": 2}})
    assert deleted.deleted_count == 1
    entries = [d["entries"] async for d in chunks.find({"sweep": "s1"}, {"entries": 1}).sort("seq")]
    assert entries == [[{"u": 0}], [{"u": 1}], [{"u": 2}]]

    for _ in range(2):
        await chunks.update_one({"_id": "s1"}, {"$set": {"done_at": T0}}, upsert=True)
    assert await chunks.find_one({"_id": "s1"}) == {"_id": "s1", "done_at": T0}
    assert (await chunks.delete_many({"sweep": "s1"})).deleted_count == 3
