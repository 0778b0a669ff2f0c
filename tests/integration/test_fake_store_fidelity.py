"""The in-memory fake (``tests/unit/mongo_semantics.py``) agrees with the real server.

Every filter and update shape the service sends runs on both; the results must be equal.
So a service-layer test on the fakes says what the real store would do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.unit.mongo_semantics import apply_update, matches, stored

T0 = datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
ENTRY = {"event_id": "e1", "user_id": 7, "cause": {"type": "tick", "event_id": "t"}}
PASSES = [
    {"pass_uuid": "a", "status": "USABLE", "payload": {"expiration": "2030-01-01", "n": 1}},
    {"pass_uuid": "b", "status": "USING", "payload": {"first_use": None}},
]
DOCS: list[Document] = [
    {"_id": "full", "user_id": 7, "passes": PASSES, "next_check_at": T0,
     "pass_status_outbox": [ENTRY], "pass_status_outbox_since": T0},
    {"_id": "empty", "user_id": 8, "passes": [], "next_check_at": None,
     "pass_status_outbox": [], "pass_status_outbox_since": None},
    {"_id": "bare", "user_id": 9},
    {"_id": "float", "user_id": 10.0, "next_check_at": T1},
]  # fmt: skip

FILTERS: list[dict[str, Any]] = [
    {"passes": PASSES},
    {"passes": [PASSES[1], PASSES[0]]},  # order matters
    {"passes": [{**PASSES[0], "status": "USING"}, PASSES[1]]},
    {"passes": {"$exists": False}},
    {"pass_status_outbox": [ENTRY]},
    {"pass_status_outbox": []},
    {"pass_status_outbox": {"$exists": False}},
    {"pass_status_outbox_since": None},
    {"pass_status_outbox_since": T0},
    {"pass_status_outbox_since": {"$gt": datetime(1970, 1, 1, tzinfo=UTC)}},
    {"user_id": {"$in": [7, 9, 10]}},
    {"user_id": 10},
    {"next_check_at": {"$lte": T1}},
    {"next_check_at": {"$lt": T1}},
    {"next_check_at": {"$gte": T1}},
    {"$or": [{"next_check_at": {"$lte": T0}}, {"next_check_at": {"$exists": False}}]},
    {"user_id": {"$mod": [2, 1]}},
    {"passes.status": "USING"},
    {"pass_status_outbox.event_id": "e1"},  # rejecting_steps: the outbox still holds it
    {"pass_status_outbox.event_id": "e9"},
]

UPDATES: list[dict[str, Any]] = [
    {"$set": {"passes.1.status": "EXPIRED", "passes.0.payload.first_use": "x"}},
    {"$set": {"next_check_at": None, "pass_status_checked_at": T1}, "$inc": {"rev": 1}},
    {"$push": {"pass_status_outbox": {"$each": [ENTRY, {"event_id": "e2"}]}}},
    {"$pullAll": {"pass_status_outbox": [ENTRY]}},
    {  # rejecting_steps: an entry Kafka refused moves whole
        "$pullAll": {"pass_status_outbox": [ENTRY]},
        "$push": {"pass_status_outbox_rejected": ENTRY},
    },
    {"$unset": {"next_check_at": ""}},
    {"$set": {"pass_status_outbox": [], "pass_status_outbox_since": None}},
]


@pytest.mark.parametrize("query", FILTERS, ids=range(len(FILTERS)))
async def test_the_fake_matches_the_same_documents(
    mongo_db: AsyncDatabase[Document], query: dict[str, Any]
) -> None:
    await mongo_db["c"].insert_many([dict(d) for d in DOCS])
    server = sorted([d["_id"] async for d in mongo_db["c"].find(query)])
    fake = sorted(d["_id"] for d in DOCS if matches(stored(d), query))
    assert fake == server


@pytest.mark.parametrize("update", UPDATES, ids=range(len(UPDATES)))
@pytest.mark.parametrize("doc_id", ["full", "empty"])
async def test_the_fake_updates_to_the_same_document(
    mongo_db: AsyncDatabase[Document], update: dict[str, Any], doc_id: str
) -> None:
    doc = next(d for d in DOCS if d["_id"] == doc_id)
    await mongo_db["c"].insert_one(dict(doc))
    await mongo_db["c"].update_one({"_id": doc_id}, update)
    server = await mongo_db.get_collection("c").find_one({"_id": doc_id})
    fake = stored(doc)
    apply_update(fake, update)
    assert server is not None
    assert list(server.items()) == list(fake.items())
