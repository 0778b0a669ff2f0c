"""Both ways of a conditional update (``consumer/adapters/mongo_conditional.py``) give the
same outcome on the real server: applied while the document matches, refused and
untouched once it does not. The server-side form is what runs on MongoDB; the client-side
form is what runs on FerretDB. Each is checked against whichever server the tests use.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from consumer.adapters.mongo_conditional import (
    ABSENT,
    BATCH_READ_MIN,
    ClientSideConditions,
    ConditionalUpdate,
    ConditionalUpdater,
    ServerSideConditions,
)
from consumer.domain.outbox import OUTBOX, OUTBOX_SINCE
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document

PASSES = [{"pass_uuid": "p-1", "status": "USABLE", "payload": {"expiration": "2030-01-01"}}]
STRATEGIES: dict[str, type[ServerSideConditions | ClientSideConditions]] = {
    "server_side": ServerSideConditions,
    "client_side": ClientSideConditions,
}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _updater(db: AsyncDatabase[Document], strategy: str) -> ConditionalUpdater:
    updater: ConditionalUpdater = STRATEGIES[strategy](db["cache"])
    return updater


def _set(value: Any) -> dict[str, Any]:
    return {"$set": {"marker": value}}


async def test_update_applies_while_the_condition_holds(
    mongo_db: AsyncDatabase[Document], strategy: str
) -> None:
    await mongo_db["cache"].insert_one({"_id": "u1", "user_id": 1, "passes": PASSES})

    applied = await _updater(mongo_db, strategy).update_one(
        ConditionalUpdate("u1", {"passes": PASSES}, _set("written"))
    )

    assert applied is True
    doc = await mongo_db["cache"].find_one({"_id": "u1"})
    assert doc is not None
    assert doc["marker"] == "written"
    assert doc["passes"] == PASSES


async def test_update_is_refused_after_a_concurrent_change(
    mongo_db: AsyncDatabase[Document], strategy: str
) -> None:
    await mongo_db["cache"].insert_one({"_id": "u1", "user_id": 1, "passes": PASSES})
    changed = [{**PASSES[0], "status": "USING"}]
    await mongo_db["cache"].update_one({"_id": "u1"}, {"$set": {"passes": changed}})

    applied = await _updater(mongo_db, strategy).update_one(
        ConditionalUpdate("u1", {"passes": PASSES}, _set("stale"))
    )

    assert applied is False
    doc = await mongo_db["cache"].find_one({"_id": "u1"})
    assert doc is not None
    assert "marker" not in doc
    assert doc["passes"] == changed


async def test_absent_condition_and_missing_document(
    mongo_db: AsyncDatabase[Document], strategy: str
) -> None:
    await mongo_db["cache"].insert_one({"_id": "bare", "user_id": 2})
    updater = _updater(mongo_db, strategy)

    assert await updater.update_one(ConditionalUpdate("bare", {"passes": ABSENT}, _set(1)))
    assert not await updater.update_one(ConditionalUpdate("bare", {"passes": []}, _set(2)))
    assert not await updater.update_one(ConditionalUpdate("gone", {"passes": ABSENT}, _set(3)))

    doc = await mongo_db["cache"].find_one({"_id": "bare"})
    assert doc is not None
    assert doc["marker"] == 1
    assert await mongo_db["cache"].count_documents({"_id": "gone"}) == 0


async def test_update_each_applies_the_matching_and_reports_a_miss(
    mongo_db: AsyncDatabase[Document], strategy: str
) -> None:
    outbox = [{"event_id": "e1"}, {"event_id": "e2"}]
    await mongo_db["cache"].insert_many(
        [
            {"_id": "a", "user_id": 1, "outbox": outbox},
            {"_id": "b", "user_id": 2, "outbox": [*outbox, {"event_id": "e3"}]},
        ]
    )
    updater = _updater(mongo_db, strategy)
    emptied: dict[str, Any] = {"$set": {"outbox": []}}

    all_matched = await updater.update_each(
        [ConditionalUpdate(d, {"outbox": outbox}, emptied) for d in ("a", "b")]
    )

    assert all_matched is False
    by_id = {d["_id"]: d["outbox"] async for d in mongo_db["cache"].find({})}
    assert by_id == {"a": [], "b": [*outbox, {"event_id": "e3"}]}
    assert await updater.update_each([]) is True


async def test_update_each_of_a_large_batch_reads_once_and_gets_each_right(
    mongo_db: AsyncDatabase[Document], strategy: str
) -> None:
    count = BATCH_READ_MIN + 8
    await mongo_db["cache"].insert_many(
        [{"_id": f"d{i}", "user_id": i, "outbox": [{"event_id": f"e{i}"}]} for i in range(count)]
    )
    # Every third document gained an entry since it was read: its update must not apply.
    stale = {f"d{i}" for i in range(0, count, 3)}
    for doc_id in stale:
        await mongo_db["cache"].update_one(
            {"_id": doc_id}, {"$push": {"outbox": {"event_id": "x"}}}
        )
    updates = [
        ConditionalUpdate(f"d{i}", {"outbox": [{"event_id": f"e{i}"}]}, {"$set": {"outbox": []}})
        for i in range(count)
    ]

    all_matched = await _updater(mongo_db, strategy).update_each(updates)

    assert all_matched is False
    outboxes = {d["_id"]: len(d["outbox"]) async for d in mongo_db["cache"].find({})}
    assert outboxes == {f"d{i}": 2 if f"d{i}" in stale else 0 for i in range(count)}


async def test_clearing_more_outboxes_than_ferretdb_has_connections_completes(
    mongodb_uri: str, mongo_db: AsyncDatabase[Document]
) -> None:
    # More documents than FerretDB 1.24 has SQLite connections per database (100): one
    # update command with a statement each would hang the server (see the adapter's notes).
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
    # Another relay (the orphan relay) already emptied every third outbox, so the usual
    # one-step clear misses there and the store takes its fallback path for all of them.
    for i in range(0, count, 3):
        await cache.update_one({"_id": f"d{i}"}, {"$set": {OUTBOX: [], OUTBOX_SINCE: None}})
    settings = Settings.from_env(
        {"PASS_STATUS_MONGODB_URI": mongodb_uri, "PASS_STATUS_MONGODB_DATABASE": mongo_db.name}
    )
    client = make_client(settings)
    try:
        store = MongoCacheStore(client, settings, Metrics(CollectorRegistry()))
        await store.detect_server()
        await asyncio.wait_for(
            store.clear_outbox([(f"d{i}", entries[i]) for i in range(count)]), timeout=120
        )
    finally:
        await client.close()

    left = [
        (doc["_id"], doc[OUTBOX], doc[OUTBOX_SINCE])
        async for doc in cache.find({"$or": [{OUTBOX: {"$ne": []}}, {OUTBOX_SINCE: {"$ne": None}}]})
    ]
    assert left == []
    assert await cache.count_documents({}) == count
