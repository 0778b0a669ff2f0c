"""Array update operators and index options as MongoDB defines them: ``$unset`` of an
array element leaves null in its place (so ``passes.N`` paths after it still name the same
pass), ``$pull`` takes conditions and partial subdocuments, and an index option is either
honoured or refused, never accepted and dropped.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from tests.store.conftest import Document

PASSES = [{"pass_uuid": "p-0"}, {"pass_uuid": "p-1"}, {"pass_uuid": "p-2"}]


def _cache(db: AsyncDatabase[Document]) -> Any:
    return db["bytemark_tickets_cache"]


async def _after(cache: Any, change: Document) -> Document:
    result = await cache.update_one({"_id": 1}, change)
    assert result.matched_count == 1
    doc: Document | None = await cache.find_one({"_id": 1}, {"_id": 0})
    assert doc is not None
    return doc


async def test_unset_of_an_array_element_sets_it_to_null(
    store_db: AsyncDatabase[Document],
) -> None:
    """``$unset: {"passes.1": ""}`` leaves null at index 1; ``passes.2`` is still p-2."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 1, "passes": PASSES, "n": [1, 2, 3]})

    doc = await _after(cache, {"$unset": {"passes.1": "", "n.0": ""}})

    assert doc == {"passes": [PASSES[0], None, PASSES[2]], "n": [None, 2, 3]}
    doc = await _after(cache, {"$set": {"passes.2.status": "USED"}})
    assert doc["passes"][2] == {"pass_uuid": "p-2", "status": "USED"}


async def test_unset_past_the_end_of_an_array_changes_nothing(
    store_db: AsyncDatabase[Document],
) -> None:
    """``$unset`` of an index past the end, or of a field of a pass, behaves as MongoDB:
    nothing, and the field removed."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 1, "passes": [{"pass_uuid": "p-0", "status": "USABLE"}]})

    result = await cache.update_one({"_id": 1}, {"$unset": {"passes.5": ""}})
    assert result.modified_count == 0
    doc = await _after(cache, {"$unset": {"passes.0.status": ""}})
    assert doc == {"passes": [{"pass_uuid": "p-0"}]}


async def test_pull_with_a_condition_removes_the_matching_elements(
    store_db: AsyncDatabase[Document],
) -> None:
    """``$pull: {a: {$gte: 2}}`` removes 2 and 3; ``$in`` removes the listed values."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 1, "a": [1, 2, 3, 1.5], "b": ["x", "y", "z"]})

    doc = await _after(cache, {"$pull": {"a": {"$gte": 2}, "b": {"$in": ["x", "z"]}}})

    assert doc == {"a": [1, 1.5], "b": ["y"]}


async def test_pull_of_a_partial_subdocument_removes_the_documents_it_matches(
    store_db: AsyncDatabase[Document],
) -> None:
    """``$pull: {passes: {status: "EXPIRED"}}`` removes every pass with that status,
    whatever its other fields; a condition inside works too; fields in any order."""
    cache = _cache(store_db)
    passes = [
        {"pass_uuid": "p-0", "status": "EXPIRED", "n": 1},
        {"pass_uuid": "p-1", "status": "USABLE", "n": 2},
        {"status": "EXPIRED", "pass_uuid": "p-2", "n": 3},
        "not a document",
    ]
    await cache.insert_one({"_id": 1, "passes": passes})

    doc = await _after(cache, {"$pull": {"passes": {"status": "EXPIRED"}}})
    assert doc == {"passes": [passes[1], passes[3]]}

    doc = await _after(cache, {"$pull": {"passes": {"n": {"$lt": 5}, "pass_uuid": "p-1"}}})
    assert doc == {"passes": [passes[3]]}


async def test_pull_of_an_exact_value_still_removes_equal_elements(
    store_db: AsyncDatabase[Document],
) -> None:
    """``$pull`` of a scalar removes the equal elements (1 and 1.0 alike)."""
    cache = _cache(store_db)
    await cache.insert_one({"_id": 1, "a": [1, 2, 1.0, {"v": 1}]})

    assert await _after(cache, {"$pull": {"a": 1}}) == {"a": [2, {"v": 1}]}


@pytest.mark.parametrize(
    "options",
    [{"sparse": True}, {"partialFilterExpression": {"user_id": {"$exists": True}}}],
    ids=["sparse", "partialFilterExpression"],
)
async def test_an_index_option_is_honoured_or_refused(
    store_db: AsyncDatabase[Document], options: Document
) -> None:
    """An index option is either kept (``list_indexes`` shows it, as MongoDB does) or
    refused with an error; never accepted and dropped, which would leave an index that
    behaves otherwise than asked."""
    cache = _cache(store_db)
    try:
        await cache.create_index([("user_id", ASCENDING)], name="user_id_1", **options)
    except OperationFailure:
        names = {index["name"] async for index in await cache.list_indexes()}
        assert "user_id_1" not in names
        return
    indexes = {index["name"]: index async for index in await cache.list_indexes()}
    for option, value in options.items():
        assert indexes["user_id_1"].get(option) == value


async def test_an_index_collation_is_honoured_or_refused(
    store_db: AsyncDatabase[Document],
) -> None:
    """A collation on an index is kept (MongoDB shows it, with its locale) or refused."""
    cache = _cache(store_db)
    try:
        await cache.create_index(
            [("user_id", ASCENDING)], name="user_id_1", collation={"locale": "fr"}
        )
    except OperationFailure:
        return
    indexes = {index["name"]: index async for index in await cache.list_indexes()}
    assert indexes["user_id_1"]["collation"]["locale"] == "fr"
