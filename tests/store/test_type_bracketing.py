"""Comparison operators compare within one BSON type ("type bracketing"): the due query
``next_check_at <= t`` matches dates only, never a null, a missing field, a number or a
string, whatever their value. The service relies on it:

- ``null`` means "nothing changes by time alone" (no non-terminal pass): never due;
- a missing field means "never evaluated": due, through the query's ``$exists: false``;
- a value of another type (written by someone else) is not due by the range.

Likewise ``pass_status_outbox_since > epoch`` (the orphan scan) matches dates only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase

from tests.store.conftest import Document

T = datetime(2030, 6, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VALUES: dict[str, object] = {
    "date_past": T - timedelta(days=1),
    "date_equal": T,
    "date_future": T + timedelta(days=1),
    "date_before_epoch": datetime(1960, 1, 1, tzinfo=UTC),
    "null": None,
    "zero": 0,
    "negative": -1,
    "large_number": 2**40,
    "string_past": "2000-01-01T00:00:00Z",
    "string_empty": "",
    "false": False,
    "empty_array": [],
    "empty_object": {},
}


async def _seed(db: AsyncDatabase[Document], field: str) -> None:
    docs: list[Document] = [{"_id": name, field: value} for name, value in VALUES.items()]
    docs.append({"_id": "missing"})
    await db["bytemark_tickets_cache"].insert_many(docs)


async def _matching(db: AsyncDatabase[Document], query: Document) -> list[str]:
    return sorted([doc["_id"] async for doc in db["bytemark_tickets_cache"].find(query)])


async def test_lte_a_date_matches_earlier_dates_only(store_db: AsyncDatabase[Document]) -> None:
    await _seed(store_db, "next_check_at")

    found = await _matching(store_db, {"next_check_at": {"$lte": T}})

    assert found == ["date_before_epoch", "date_equal", "date_past"]


async def test_exists_false_matches_the_missing_field_only(
    store_db: AsyncDatabase[Document],
) -> None:
    await _seed(store_db, "next_check_at")

    assert await _matching(store_db, {"next_check_at": {"$exists": False}}) == ["missing"]


async def test_the_due_query_matches_past_dates_and_missing_never_null(
    store_db: AsyncDatabase[Document],
) -> None:
    await _seed(store_db, "next_check_at")
    query = {"$or": [{"next_check_at": {"$lte": T}}, {"next_check_at": {"$exists": False}}]}

    found = await _matching(store_db, query)

    assert found == ["date_before_epoch", "date_equal", "date_past", "missing"]


async def test_gt_epoch_matches_dates_after_it_only(store_db: AsyncDatabase[Document]) -> None:
    await _seed(store_db, "pass_status_outbox_since")

    found = await _matching(store_db, {"pass_status_outbox_since": {"$gt": EPOCH}})

    assert found == ["date_equal", "date_future", "date_past"]


async def test_bracketing_holds_with_an_index(store_db: AsyncDatabase[Document]) -> None:
    """The same answers once the field is indexed (the service always indexes it)."""
    await _seed(store_db, "next_check_at")
    await store_db["bytemark_tickets_cache"].create_index("next_check_at", name="next_check_at_1")
    query = {"$or": [{"next_check_at": {"$lte": T}}, {"next_check_at": {"$exists": False}}]}

    found = await _matching(store_db, query)

    assert found == ["date_before_epoch", "date_equal", "date_past", "missing"]
