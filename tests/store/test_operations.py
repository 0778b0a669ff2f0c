"""Every query, update and command the service sends (``consumer/adapters/mongo.py``), with
the results MongoDB gives. Each test names the adapter method that relies on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Int64
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from pymongo import ASCENDING, UpdateOne, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tests.store.conftest import Document, MakeClient

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PASSES: list[dict[str, Any]] = [
    {"pass_uuid": "p-1", "status": "USABLE", "payload": {"expiration": "2030-01-01", "n": 1}},
    {"pass_uuid": "p-2", "status": "USING", "payload": {"first_use": None, "list": [1, "a"]}},
]


def _cache(db: AsyncDatabase[Document]) -> Any:
    return db["bytemark_tickets_cache"]


async def _ids(cursor: Any) -> list[Any]:
    return [doc["_id"] async for doc in cursor]


# --- reads -------------------------------------------------------------------------------


async def test_find_by_user_id_matches_every_numeric_type(
    store_db: AsyncDatabase[Document],
) -> None:
    """find_user / find_users: ``{user_id: n}`` matches n stored as int32, int64 or double."""
    cache = _cache(store_db)
    await cache.insert_many(
        [
            {"_id": "int32", "user_id": 5},
            {"_id": "int64", "user_id": Int64(5)},
            {"_id": "double", "user_id": 5.0},
            {"_id": "string", "user_id": "5"},
            {"_id": "other", "user_id": 6},
        ]
    )

    assert sorted(await _ids(cache.find({"user_id": 5}))) == ["double", "int32", "int64"]
    one = await cache.find_one({"user_id": 6})
    assert one is not None
    assert one["_id"] == "other"
    assert await cache.find_one({"user_id": 7}) is None


async def test_find_users_with_in(store_db: AsyncDatabase[Document]) -> None:
    """find_users: ``{user_id: {$in: [...]}}`` returns the documents of the listed users."""
    cache = _cache(store_db)
    await cache.insert_many([{"_id": i, "user_id": i} for i in range(1, 11)])

    assert sorted(await _ids(cache.find({"user_id": {"$in": [2, 4, 99, 4]}}))) == [2, 4]
    assert await _ids(cache.find({"user_id": {"$in": []}})) == []


async def test_due_query_or_lte_exists(store_db: AsyncDatabase[Document]) -> None:
    """due_users: ``$or`` of ``next_check_at <= t`` and ``next_check_at`` missing."""
    cache = _cache(store_db)
    await cache.insert_many(
        [
            {"_id": "past", "user_id": 1, "next_check_at": T0 - timedelta(seconds=1)},
            {"_id": "equal", "user_id": 2, "next_check_at": T0},
            {"_id": "future", "user_id": 3, "next_check_at": T0 + timedelta(milliseconds=1)},
            {"_id": "missing", "user_id": 4},
            {"_id": "null", "user_id": 5, "next_check_at": None},
        ]
    )
    query = {"$or": [{"next_check_at": {"$lte": T0}}, {"next_check_at": {"$exists": False}}]}

    assert sorted(await _ids(cache.find(query))) == ["equal", "missing", "past"]


async def test_due_query_of_one_shard_with_mod(store_db: AsyncDatabase[Document]) -> None:
    """due_users with shards: ``user_id: {$mod: [shards, shard]}`` splits users exactly."""
    cache = _cache(store_db)
    await cache.insert_many([{"_id": i, "user_id": i} for i in range(12)])

    shards = [sorted(await _ids(cache.find({"user_id": {"$mod": [3, s]}}))) for s in range(3)]

    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


async def test_outbox_marker_range_with_gt_and_projection(
    store_db: AsyncDatabase[Document],
) -> None:
    """scan_outboxes: ``{since: {$gt: epoch}}`` finds only dates; the projection returns
    ``_id`` and the named fields, and no other."""
    cache = _cache(store_db)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    outbox = [{"event_id": "e1"}]
    await cache.insert_many(
        [
            {"_id": "pending", "user_id": 1, "outbox": outbox, "since": T0, "passes": PASSES},
            {"_id": "cleared", "user_id": 2, "outbox": [], "since": None},
            {"_id": "never", "user_id": 3},
        ]
    )

    found = [
        doc
        async for doc in cache.find(
            {"since": {"$gt": epoch}}, {"user_id": 1, "outbox": 1, "since": 1}
        )
    ]

    assert found == [{"_id": "pending", "user_id": 1, "outbox": outbox, "since": T0}]


async def test_sort_by_user_id_and_batches_of_a_cursor(
    store_db: AsyncDatabase[Document], make_client: MakeClient, store_db_name: str
) -> None:
    """all_users and sweeps: ``sort(user_id)`` orders the stream, ``batch_size`` splits it
    into getMores, and every document comes exactly once."""
    await _cache(store_db).insert_many([{"_id": i, "user_id": (i * 7) % 23} for i in range(23)])
    commands: list[str] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            commands.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:  # noqa: ARG002
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:  # noqa: ARG002
            return None

    client = make_client(event_listeners=[Listener()])
    cache = client[store_db_name]["bytemark_tickets_cache"]

    users = [
        doc["user_id"] async for doc in cache.find({}, batch_size=5).sort("user_id", ASCENDING)
    ]

    assert users == list(range(23))
    assert commands.count("find") == 1
    assert commands.count("getMore") >= 4


async def test_dates_keep_milliseconds_and_out_of_range_dates_survive(
    store_db: AsyncDatabase[Document], store_client: Any, store_db_name: str
) -> None:
    """Every date field: BSON dates keep milliseconds (the service truncates to them before
    comparing); a date outside Python's range is stored and read back as is."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": "d", "at": datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)})
    await cache.insert_one({"_id": "far", "at": DatetimeMS(2**62)})

    doc = await cache.find_one({"_id": "d"})
    assert doc is not None
    assert doc["at"] == datetime(2030, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    auto = store_client.get_database(
        store_db_name,
        codec_options=CodecOptions(
            tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
        ),
    )["bytemark_tickets_cache"]
    far = await auto.find_one({"_id": "far"})
    assert far is not None
    assert far["at"] == DatetimeMS(2**62)


# --- writes ------------------------------------------------------------------------------


async def test_update_set_inc_push_each_and_dotted_array_paths(
    store_db: AsyncDatabase[Document],
) -> None:
    """write_user: ``$set`` of ``passes.<i>.status`` and ``passes.<i>.payload.first_use``,
    ``$inc`` of a missing counter, ``$push`` ``$each`` onto a missing outbox, in one update."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": "u", "user_id": 1, "passes": PASSES})
    used = datetime(2030, 1, 1, 12, tzinfo=UTC)

    result = await cache.update_one(
        {"_id": "u"},
        {
            "$set": {
                "passes.1.status": "EXPIRED",
                "passes.0.payload.first_use": "2030-01-01T12:00:00.000Z",
                "next_check_at": None,
                "checked_at": used,
                "since": used,
            },
            "$inc": {"rev": 1},
            "$push": {"outbox": {"$each": [{"event_id": "a"}, {"event_id": "b"}]}},
        },
    )
    assert (result.matched_count, result.modified_count) == (1, 1)
    await cache.update_one(
        {"_id": "u"},
        {"$inc": {"rev": 1}, "$push": {"outbox": {"$each": [{"event_id": "c"}]}}},
    )

    doc = await cache.find_one({"_id": "u"})
    assert doc is not None
    assert doc["passes"][1] == {**PASSES[1], "status": "EXPIRED"}
    assert doc["passes"][0]["payload"] == {
        **PASSES[0]["payload"],
        "first_use": "2030-01-01T12:00:00.000Z",
    }
    assert doc["passes"][0]["status"] == "USABLE"
    assert doc["rev"] == 2
    assert doc["outbox"] == [{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}]
    assert doc["next_check_at"] is None
    assert doc["checked_at"] == used


async def test_conditional_update_on_the_whole_passes_array(
    store_db: AsyncDatabase[Document],
) -> None:
    """write_user: ``{_id, passes: <as read>}`` matches while the array is exactly as read,
    and matches nothing after any change to it (a nested value, an element added)."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": "u", "user_id": 1, "passes": PASSES, "other": 1})
    change = {"$inc": {"rev": 1}}

    assert (await cache.update_one({"_id": "u", "passes": PASSES}, change)).matched_count == 1
    # A field outside ``passes`` changing does not matter.
    await cache.update_one({"_id": "u"}, {"$set": {"other": 2}})
    assert (await cache.update_one({"_id": "u", "passes": PASSES}, change)).matched_count == 1
    # A nested value changing does.
    await cache.update_one({"_id": "u"}, {"$set": {"passes.1.payload.list.1": "b"}})
    assert (await cache.update_one({"_id": "u", "passes": PASSES}, change)).matched_count == 0
    changed = [PASSES[0], {**PASSES[1], "payload": {"first_use": None, "list": [1, "b"]}}]
    assert (await cache.update_one({"_id": "u", "passes": changed}, change)).matched_count == 1
    # So does an element added, or a prefix of the array.
    await cache.update_one({"_id": "u"}, {"$push": {"passes": {"pass_uuid": "p-3"}}})
    assert (await cache.update_one({"_id": "u", "passes": changed}, change)).matched_count == 0
    assert (await cache.update_one({"_id": "u", "passes": changed[:1]}, change)).matched_count == 0
    # A wrong _id never matches, whatever the passes.
    assert (await cache.update_one({"_id": "x", "passes": changed}, change)).matched_count == 0

    doc = await cache.find_one({"_id": "u"})
    assert doc is not None
    assert doc["rev"] == 3


async def test_conditional_update_on_absent_passes(store_db: AsyncDatabase[Document]) -> None:
    """write_user of a document without passes: ``{_id, passes: {$exists: false}}``."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": "bare", "user_id": 1})
    absent = {"_id": "bare", "passes": {"$exists": False}}

    assert (await cache.update_one(absent, {"$set": {"m": 1}})).matched_count == 1
    await cache.update_one({"_id": "bare"}, {"$set": {"passes": []}})
    assert (await cache.update_one(absent, {"$set": {"m": 2}})).matched_count == 0
    assert (
        await cache.update_one({"_id": "bare", "passes": []}, {"$set": {"m": 3}})
    ).matched_count == 1


async def test_outbox_clearing_conditions_and_pull_all(store_db: AsyncDatabase[Document]) -> None:
    """clear_outbox: ``{_id, outbox: <entries>}`` empties an outbox holding exactly the
    published entries; ``$pullAll`` removes exactly those entries; ``{_id, outbox: []}``
    matches an empty outbox only."""
    cache = _cache(store_db)
    e1, e2, late = {"event_id": "e1", "n": 1}, {"event_id": "e2", "n": 2}, {"event_id": "x"}
    await cache.insert_many(
        [
            {"_id": "exact", "outbox": [e1, e2], "since": T0},
            {"_id": "grown", "outbox": [e1, e2, late], "since": T0},
            {"_id": "missing"},
        ]
    )
    emptied: Document = {"$set": {"outbox": [], "since": None}}

    assert (
        await cache.update_one({"_id": "exact", "outbox": [e1, e2]}, emptied)
    ).matched_count == 1
    assert (
        await cache.update_one({"_id": "grown", "outbox": [e1, e2]}, emptied)
    ).matched_count == 0
    pulled = await cache.update_one({"_id": "grown"}, {"$pullAll": {"outbox": [e1, e2]}})
    assert (pulled.matched_count, pulled.modified_count) == (1, 1)
    unset = {"$set": {"since": None}}
    assert (await cache.update_one({"_id": "grown", "outbox": []}, unset)).matched_count == 0
    assert (await cache.update_one({"_id": "exact", "outbox": []}, unset)).matched_count == 1
    assert (await cache.update_one({"_id": "missing", "outbox": []}, unset)).matched_count == 0

    docs = {doc["_id"]: doc async for doc in cache.find({})}
    assert docs["exact"] == {"_id": "exact", "outbox": [], "since": None}
    assert docs["grown"] == {"_id": "grown", "outbox": [late], "since": T0}


async def test_moving_a_refused_outbox_entry_aside(store_db: AsyncDatabase[Document]) -> None:
    """reject_outbox_entries: ``{_id, "outbox.event_id": id}`` matches while the outbox
    holds an entry with that ``event_id`` (dotted path through an array of documents);
    ``$pullAll`` and ``$push`` of the same entry on two fields in one update move it."""
    cache = _cache(store_db)
    refused, later = {"event_id": "e1", "n": 1}, {"event_id": "e2", "n": 2}
    await cache.insert_one({"_id": "u", "outbox": [refused, later], "since": T0})
    move = {"$pullAll": {"outbox": [refused]}, "$push": {"rejected": refused}}

    moved = await cache.update_one({"_id": "u", "outbox.event_id": "e1"}, move)
    assert (moved.matched_count, moved.modified_count) == (1, 1)
    again = await cache.update_one({"_id": "u", "outbox.event_id": "e1"}, move)
    assert again.matched_count == 0  # never parked twice
    assert await cache.find_one({"_id": "u"}) == {
        "_id": "u",
        "outbox": [later],
        "since": T0,
        "rejected": [refused],
    }


async def test_unordered_bulk_of_many_conditional_updates(
    store_db: AsyncDatabase[Document],
) -> None:
    """clear_outbox: one unordered ``bulk_write`` of more than 100 conditional updates
    completes, applies each that matches and counts the matches."""
    cache = _cache(store_db)
    count = 250
    await cache.insert_many([{"_id": i, "outbox": [{"event_id": f"e{i}"}]} for i in range(count)])
    stale = set(range(0, count, 5))
    await cache.update_many({"_id": {"$in": sorted(stale)}}, {"$set": {"outbox": []}})

    result = await cache.bulk_write(
        [
            UpdateOne(
                {"_id": i, "outbox": [{"event_id": f"e{i}"}]},
                {"$set": {"outbox": [], "done": True}},
            )
            for i in range(count)
        ],
        ordered=False,
    )

    assert result.matched_count == count - len(stale)
    done = {doc["_id"] async for doc in cache.find({"done": True}, {"_id": 1})}
    assert done == set(range(count)) - stale


async def test_insert_with_a_taken_id_raises_duplicate_key(
    store_db: AsyncDatabase[Document],
) -> None:
    """insert_check_log: an integer ``_id`` already taken raises ``DuplicateKeyError`` and
    leaves the first document as it was."""
    log = store_db["bytemark_cache_status_check_log"]
    await log.insert_one({"_id": 1_700_000_000_000, "part": 1})

    with pytest.raises(DuplicateKeyError):
        await log.insert_one({"_id": 1_700_000_000_000, "part": 2})

    assert await log.find_one({"_id": 1_700_000_000_000}) == {"_id": 1_700_000_000_000, "part": 1}


# --- commands ------------------------------------------------------------------------------


async def test_create_index_is_idempotent(store_db: AsyncDatabase[Document]) -> None:
    """ensure_indexes: creating the same index again (same key, same name) is a no-op."""
    cache = _cache(store_db)
    for _ in range(2):
        assert await cache.create_index([("user_id", ASCENDING)], name="user_id_1") == "user_id_1"
        await cache.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
        await cache.create_index([("pass_status_outbox_since", ASCENDING)], name="outbox_since_1")

    names = {index["name"] async for index in await cache.list_indexes()}
    assert names == {"_id_", "user_id_1", "next_check_at_1", "outbox_since_1"}


async def test_ping_and_build_info(store_client: Any) -> None:
    """ping (health probes) answers ok; buildInfo reports a version (operators' checks)."""
    assert (await store_client.admin.command("ping"))["ok"] == 1
    info = await store_client.admin.command("buildInfo")
    assert info["ok"] == 1
    assert isinstance(info["version"], str)
    print(f"\nstore under test: version {info['version']}")  # noqa: T201
