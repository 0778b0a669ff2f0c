"""The local stack itself: Kafka consumer-group semantics and the MongoDB features
the service relies on, checked against the real servers (FerretDB 1.24 locally).

The ``test_ferretdb_*`` probes pin down what the MongoDB-compatible server does
and does not support, so the service's design can rely on (or avoid) it. Each
asserts what is TRUE of the server under test; where FerretDB 1.24 differs from
MongoDB the assertion accepts the MongoDB behaviour too, so the suite also
passes against a real MongoDB (``PASS_STATUS_MONGODB_URI``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, WriteError

from tests.integration.conftest import Document, MakeTopics

N_MESSAGES = 60
COMMIT_AFTER = 25

Seen = list[tuple[int, int, bytes]]  # (partition, offset, key)


async def _consume(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 30.0) -> Seen:
    """Exactly ``count`` records in consumption order (per partition: offset order)."""
    seen: Seen = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"consumed {len(seen)} of {count} records in {timeout_s}s")
        batches = await consumer.getmany(timeout_ms=500, max_records=count - len(seen))
        for records in batches.values():
            seen.extend((r.partition, r.offset, r.key) for r in records)
    return seen


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


async def test_consumer_group_resumes_after_committed_offsets(
    kafka_bootstrap: str, make_topics: MakeTopics, unique_name: str
) -> None:
    [topic] = await make_topics([unique_name], partitions=3)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    produced: dict[tuple[int, int], bytes] = {}
    partition_of_key: dict[bytes, set[int]] = {}
    try:
        for i in range(N_MESSAGES):
            key = str(1000 + i % 12).encode()
            meta = await producer.send_and_wait(topic, value=f"m{i}".encode(), key=key)
            produced[(meta.partition, meta.offset)] = key
            partition_of_key.setdefault(key, set()).add(meta.partition)
    finally:
        await producer.stop()
    # keyed records: one partition per key, and the keys spread over all partitions
    assert all(len(p) == 1 for p in partition_of_key.values())
    assert {p for p, _ in produced} == {0, 1, 2}

    first = _consumer(kafka_bootstrap, topic, unique_name)
    await first.start()
    try:
        head = await _consume(first, COMMIT_AFTER)
        committed: dict[TopicPartition, int] = {}
        for partition, offset, _ in head:
            tp = TopicPartition(topic, partition)
            committed[tp] = max(committed.get(tp, 0), offset + 1)
        await first.commit(committed)
    finally:
        await first.stop()

    second = _consumer(kafka_bootstrap, topic, unique_name)
    await second.start()
    try:
        tail = await _consume(second, N_MESSAGES - COMMIT_AFTER)
        assert await second.getmany(timeout_ms=1000) == {}  # nothing more, nothing twice
        for tp, offset in committed.items():
            assert await second.committed(tp) == offset
    finally:
        await second.stop()

    head_ids = {(p, o) for p, o, _ in head}
    tail_ids = {(p, o) for p, o, _ in tail}
    assert len(tail_ids) == len(tail)
    assert not head_ids & tail_ids
    assert head_ids | tail_ids == set(produced)
    for partition, offset, key in tail:
        assert produced[(partition, offset)] == key
    for partition in (0, 1, 2):  # resumed exactly at the committed offset (or 0)
        rest = [o for p, o, _ in tail if p == partition]
        if rest:
            assert min(rest) == committed.get(TopicPartition(topic, partition), 0)


# --------------------------------------------------------------------------- MongoDB basics


def _user(user_id: int) -> Document:
    return {
        "_id": user_id,
        "user_id": user_id,
        "timestamp": 1,
        "passes": [
            {
                "pass_uuid": "p-a",
                "status": "USABLE",
                "payload": {"uuid": "p-a", "expiration": "2030-01-01T00:00:00Z", "n": 1},
            },
            {
                "pass_uuid": "p-b",
                "status": "USABLE",
                "payload": {"uuid": "p-b", "first_use": None, "list": [1, 2]},
            },
        ],
        "outbox": [],
    }


async def test_mongodb_insert_find_index_and_conditional_update(
    mongo_db: AsyncDatabase[Document],
) -> None:
    col = mongo_db["bytemark_tickets_cache"]
    await col.insert_one(_user(7))
    assert await col.find_one({"user_id": 7}) == _user(7)

    name = await col.create_index([("next_check_at", ASCENDING), ("user_id", ASCENDING)])
    info = await col.index_information()
    assert info[name]["key"] == [("next_check_at", ASCENDING), ("user_id", ASCENDING)]

    read = await col.find_one({"_id": 7})
    assert read is not None
    # another writer changes the document between our read and our write
    await col.update_one({"_id": 7}, {"$set": {"timestamp": 2}})
    stale = await col.update_one(
        {"_id": 7, "timestamp": read["timestamp"]}, {"$set": {"passes.0.status": "USING"}}
    )
    assert stale.matched_count == 0
    fresh = await col.update_one({"_id": 7, "timestamp": 2}, {"$set": {"passes.0.status": "USING"}})
    assert (fresh.matched_count, fresh.modified_count) == (1, 1)


# --------------------------------------------------------------------------- FerretDB probes


async def test_ferretdb_a_filter_on_whole_array_of_subdocuments(
    mongo_db: AsyncDatabase[Document],
) -> None:
    """(a) ``{"_id": x, "passes": <array as read>}`` matches only an unchanged array,
    compared element by element, field order included (as in MongoDB)."""
    col = mongo_db["c"]
    await col.insert_one(_user(1))
    as_read = _user(1)["passes"]

    same = await col.update_one({"_id": 1, "passes": as_read}, {"$set": {"m": 1}})
    assert same.matched_count == 1

    reordered = [dict(reversed(list(as_read[0].items()))), as_read[1]]
    assert (
        await col.update_one({"_id": 1, "passes": reordered}, {"$set": {"m": 2}})
    ).matched_count == 0

    await col.update_one({"_id": 1}, {"$set": {"passes.1.payload.list": [1, 2, 3]}})
    changed = await col.update_one({"_id": 1, "passes": as_read}, {"$set": {"m": 3}})
    assert changed.matched_count == 0
    doc = await col.find_one({"_id": 1})
    assert doc is not None
    assert doc["m"] == 1


async def test_ferretdb_b_set_with_dotted_array_index_paths(
    mongo_db: AsyncDatabase[Document],
) -> None:
    """(b) ``$set`` of ``passes.<i>.status`` and ``passes.<i>.payload.first_use``
    works and keeps every other field; a filter on ``passes.<i>.status`` works.
    The positional ``$`` and ``arrayFilters`` are NOT supported by FerretDB 1.24."""
    col = mongo_db["c"]
    await col.insert_one(_user(1))
    result = await col.update_one(
        {"_id": 1, "passes.1.status": "USABLE"},
        {
            "$set": {
                "passes.1.status": "USING",
                "passes.1.payload.first_use": "2025-01-01T00:00:00Z",
            }
        },
    )
    assert result.modified_count == 1
    expected = _user(1)
    expected["passes"][1]["status"] = "USING"
    expected["passes"][1]["payload"]["first_use"] = "2025-01-01T00:00:00Z"
    assert await col.find_one({"_id": 1}) == expected
    assert await col.count_documents({"passes.1.status": "USING"}) == 1
    assert await col.count_documents({"passes.status": "USING"}) == 1  # array traversal

    server = await _server(mongo_db)
    if server.ferretdb:
        with pytest.raises(WriteError, match="Cannot create field '\\$'"):
            await col.update_one(
                {"_id": 1, "passes.pass_uuid": "p-a"}, {"$set": {"passes.$.status": "EXPIRED"}}
            )
        with pytest.raises(OperationFailure, match="arrayFilters"):
            await col.update_one(
                {"_id": 1},
                {"$set": {"passes.$[p].status": "EXPIRED"}},
                array_filters=[{"p.pass_uuid": "p-a"}],
            )


async def test_ferretdb_c_push_each_pull_and_pull_all(mongo_db: AsyncDatabase[Document]) -> None:
    """(c) ``$push``+``$each`` and ``$pullAll`` (exact elements) work. ``$pull`` with a
    CONDITION (``{"outbox": {"event_id": {"$in": [...]}}}``, or a partial
    subdocument) removes the matching elements (FerretDB 1.24 removed nothing; patch
    0009 fixes it); ``$pull`` of an exact element works."""
    col = mongo_db["c"]
    await col.insert_one({"_id": 1, "outbox": []})
    events = [{"event_id": f"e{i}", "n": i} for i in range(1, 6)]
    pushed = await col.update_one({"_id": 1}, {"$push": {"outbox": {"$each": events}}})
    assert pushed.modified_count == 1

    conditional = await col.update_one(
        {"_id": 1}, {"$pull": {"outbox": {"event_id": {"$in": ["e1", "e2"]}}}}
    )
    after_conditional = events[2:]
    assert (conditional.matched_count, conditional.modified_count) == (1, 1)
    assert await _outbox(mongo_db) == after_conditional

    exact = await col.update_one({"_id": 1}, {"$pull": {"outbox": events[2]}})
    assert exact.modified_count == 1
    remaining = [e for e in after_conditional if e != events[2]]
    assert await _outbox(mongo_db) == remaining

    pull_all = await col.update_one({"_id": 1}, {"$pullAll": {"outbox": [events[3], events[4]]}})
    assert pull_all.modified_count == 1
    assert await _outbox(mongo_db) == [e for e in remaining if e not in events[3:]]


async def test_ferretdb_d_mod_exists_lte_datetime_or(mongo_db: AsyncDatabase[Document]) -> None:
    """(d) ``$mod``, ``$exists``, ``$lte`` on BSON dates, ``$or`` (and ``null``
    matching missing fields) behave as in MongoDB."""
    col = mongo_db["c"]
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
    docs: list[Document] = []
    for i in range(1, 31):
        doc: Document = {"_id": i, "user_id": i}
        if i % 5 == 0:
            doc["next_check_at"] = None
        elif i % 7 != 0:  # multiples of 7 (but not of 5) have no next_check_at at all
            doc["next_check_at"] = now + dt.timedelta(minutes=i - 15)
        docs.append(doc)
    await col.insert_many(docs)

    def ids(pred: Callable[[Document], bool]) -> list[int]:
        return sorted(d["_id"] for d in docs if pred(d))

    async def found(query: Document) -> list[int]:
        return sorted([d["_id"] async for d in col.find(query, {"_id": 1})])

    assert await found({"user_id": {"$mod": [4, 1]}}) == ids(lambda d: d["user_id"] % 4 == 1)
    assert await found({"next_check_at": {"$exists": False}}) == ids(
        lambda d: "next_check_at" not in d
    )
    due = ids(lambda d: d.get("next_check_at") is not None and d["next_check_at"] <= now)
    assert await found({"next_check_at": {"$lte": now}}) == due
    assert await found(
        {"$or": [{"next_check_at": {"$lte": now}}, {"next_check_at": {"$exists": False}}]}
    ) == sorted(due + ids(lambda d: "next_check_at" not in d))
    assert await found({"$or": [{"next_check_at": {"$lte": now}}, {"next_check_at": None}]}) == (
        sorted(due + ids(lambda d: d.get("next_check_at") is None))
    )
    shard = await found({"user_id": {"$mod": [3, 2]}, "next_check_at": {"$lte": now}})
    assert shard == [i for i in due if i % 3 == 2]


async def test_ferretdb_e_bulk_write_update_one(mongo_db: AsyncDatabase[Document]) -> None:
    """(e) ``bulk_write`` of several ``UpdateOne`` (ordered and unordered) works,
    with matched/modified counts, conditional filters included."""
    col = mongo_db["c"]
    await col.insert_many([{"_id": i, "v": 0} for i in range(5)])
    for ordered in (True, False):
        result = await col.bulk_write(
            [
                UpdateOne({"_id": 0}, {"$inc": {"v": 1}}),
                UpdateOne({"_id": 1, "v": 99}, {"$inc": {"v": 1}}),  # stale: no match
                UpdateOne({"_id": 2}, {"$set": {"v": 5}}),
                UpdateOne({"_id": 404}, {"$set": {"v": 1}}),
            ],
            ordered=ordered,
        )
        assert (result.matched_count, result.upserted_count) == (2, 0)
    assert [d["v"] async for d in col.find({}, sort=[("_id", ASCENDING)])] == [2, 0, 5, 0, 0]


async def test_ferretdb_f_sorted_find_streams_in_batches(mongo_db: AsyncDatabase[Document]) -> None:
    """(f) ``find`` with ``sort`` and ``batch_size`` streams every document in order."""
    col = mongo_db["c"]
    await col.insert_many([{"_id": i, "user_id": (i * 37) % 503} for i in range(503)])
    cursor = col.find({}, {"user_id": 1}, sort=[("user_id", DESCENDING)], batch_size=50)
    got = [d["user_id"] async for d in cursor]
    assert got == sorted(range(503), reverse=True)


async def test_ferretdb_g_write_concern_majority(mongo_db: AsyncDatabase[Document]) -> None:
    """(g) writes with ``w="majority"`` (and ``j=True``) are accepted and acknowledged."""
    col = mongo_db.get_collection(
        "c", write_concern=WriteConcern("majority", wtimeout=5000, j=True)
    )
    assert (await col.insert_one({"_id": 1})).acknowledged
    result = await col.update_one({"_id": 1}, {"$set": {"x": 1}})
    assert (result.acknowledged, result.modified_count) == (True, 1)


async def test_ferretdb_other_limits(mongo_db: AsyncDatabase[Document]) -> None:
    """What else the design must not rely on with FerretDB 1.24 (all fine in MongoDB):
    ``$elemMatch`` gives wrong answers, no multi-document transactions, no partial
    indexes, no ``$expr``. Combined ``$set``+``$push``+``$inc`` in one update and
    ``find_one_and_update`` work."""
    col = mongo_db["c"]
    await col.insert_one(_user(1))
    combined = await col.update_one(
        {"_id": 1, "passes": _user(1)["passes"]},
        {
            "$set": {"passes.0.status": "EXPIRED", "next_check_at": None},
            "$push": {"outbox": {"$each": [{"event_id": "e1"}]}},
            "$inc": {"version": 1},
        },
    )
    assert combined.modified_count == 1
    after = await col.find_one_and_update(
        {"_id": 1}, {"$inc": {"version": 1}}, return_document=True
    )
    assert after is not None
    assert (after["version"], after["outbox"], after["passes"][0]["status"]) == (
        2,
        [{"event_id": "e1"}],
        "EXPIRED",
    )

    server = await _server(mongo_db)
    if not server.ferretdb:
        return
    # $elemMatch silently matches nothing (here one document has such an element)
    assert await col.count_documents({"passes": {"$elemMatch": {"status": "EXPIRED"}}}) == 0
    with pytest.raises(OperationFailure, match="partialFilterExpression"):
        await col.create_index(
            [("next_check_at", ASCENDING)], partialFilterExpression={"x": {"$exists": True}}
        )
    with pytest.raises(OperationFailure, match="not implemented"):
        await col.count_documents({"$expr": {"$gt": ["$version", 0]}})

    async def in_transaction() -> None:
        async with server.client.start_session() as session, await session.start_transaction():
            await col.insert_one({"_id": 2}, session=session)

    with pytest.raises(OperationFailure):
        await in_transaction()


# --------------------------------------------------------------------------- helpers


class _Server:
    def __init__(self, client: AsyncMongoClient[Document], build_info: Document) -> None:
        self.client = client
        self.ferretdb = "ferretdbVersion" in build_info


async def _server(db: AsyncDatabase[Document]) -> _Server:
    info: Document = await db.client.admin.command("buildInfo")
    return _Server(db.client, info)


async def _outbox(db: AsyncDatabase[Document]) -> list[Any]:
    doc = await db["c"].find_one({"_id": 1})
    assert doc is not None
    outbox: list[Any] = doc["outbox"]
    return outbox
