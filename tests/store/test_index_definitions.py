"""Index definitions, as start reads and meets them (``consumer/adapters/mongo_indexes.py``):
``listIndexes`` reports each index's name, key and ``unique`` flag; a create_index that
meets another definition fails at once with code 85 (same key under another name) or 86
(same name, another key), never silently, and leaves the existing index as it was."""

from __future__ import annotations

import pytest
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from tests.store.conftest import Document


async def test_list_indexes_reports_name_key_and_unique(store_db: AsyncDatabase[Document]) -> None:
    cache = store_db["bytemark_tickets_cache"]
    await cache.create_index([("user_id", ASCENDING)], name="refresher_uid", unique=True)
    await cache.create_index([("next_check_at", DESCENDING)], name="nca_desc")

    indexes = {i["name"]: i async for i in await cache.list_indexes()}

    assert dict(indexes["refresher_uid"]["key"]) == {"user_id": 1}
    assert indexes["refresher_uid"].get("unique") is True
    assert dict(indexes["nca_desc"]["key"]) == {"next_check_at": -1}
    assert not indexes["nca_desc"].get("unique")


async def test_same_key_under_another_name_is_refused_with_code_85(
    store_db: AsyncDatabase[Document],
) -> None:
    cache = store_db["bytemark_tickets_cache"]
    await cache.create_index([("user_id", ASCENDING)], name="refresher_uid", unique=True)

    with pytest.raises(OperationFailure) as refused:
        await cache.create_index([("user_id", ASCENDING)], name="user_id_1")

    assert refused.value.code == 85
    names = {i["name"] async for i in await cache.list_indexes()}
    assert names == {"_id_", "refresher_uid"}


async def test_same_name_with_another_key_is_refused_with_code_86(
    store_db: AsyncDatabase[Document],
) -> None:
    cache = store_db["bytemark_tickets_cache"]
    await cache.create_index([("pass_status_rev", ASCENDING)], name="next_check_at_1")

    with pytest.raises(OperationFailure) as refused:
        await cache.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")

    assert refused.value.code == 86
    indexes = {i["name"]: i async for i in await cache.list_indexes()}
    assert dict(indexes["next_check_at_1"]["key"]) == {"pass_status_rev": 1}
