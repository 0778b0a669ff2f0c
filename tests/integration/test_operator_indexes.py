"""The operator's indexes at start, against the local store (issue 19): a unique
``user_id`` index of the refresher's, under its own name, is used (no ``user_id_1`` beside
it); an index that clashes with one the service needs stops start at once (exit 2) with a
message naming it, instead of a create_index retried for ever."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from consumer.adapters.mongo import MongoCacheStore
from consumer.errors import IndexConflictError
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.integration.factories import a_pass, a_user
from tests.integration.harness import REPO, ServiceEnv

CACHE = "bytemark_tickets_cache"


async def _indexes(db: AsyncDatabase[Document]) -> dict[str, dict[str, Any]]:
    return {i["name"]: dict(i) async for i in await db[CACHE].list_indexes()}


async def test_operators_unique_user_id_index_under_another_name_is_used_not_duplicated(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    cache = mongo_db[CACHE]
    await cache.insert_one(a_user(7, [a_pass()]))
    await cache.create_index([("user_id", ASCENDING)], name="refresher_user_id", unique=True)

    for _ in range(2):  # and again on the next start: nothing changes
        await cache_store.ensure_indexes()
        indexes = await _indexes(mongo_db)
        assert set(indexes) == {
            "_id_",
            "refresher_user_id",
            "next_check_at_1",
            "outbox_since_1",
            "outbox_relay_1",
            "checked_at_1",
        }
    assert indexes["refresher_user_id"].get("unique") is True
    found = [batch async for batch in cache_store.find_users([7])]
    assert [list(batch) for batch in found] == [[7]]


async def test_conflicting_next_check_at_index_stops_start_naming_it(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await mongo_db[CACHE].create_index([("pass_status_rev", ASCENDING)], name="next_check_at_1")

    started = time.monotonic()
    with pytest.raises(IndexConflictError, match=r"'next_check_at_1'.*dropIndex"):
        await cache_store.ensure_indexes()
    assert time.monotonic() - started < 10  # decided, not retried
    assert "next_check_at_1" in await _indexes(mongo_db)  # the operator's index is untouched


@pytest.mark.parametrize("command", [("run",), ("check", "--user", "1")], ids=" ".join)
async def test_start_refuses_with_exit_2_on_a_conflicting_index(
    service_env: ServiceEnv, mongodb_uri: str, command: tuple[str, ...]
) -> None:
    from pymongo import AsyncMongoClient  # noqa: PLC0415

    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri)
    settings = service_env.settings
    await client[settings.mongodb_database][settings.collection_cache].create_index(
        [("pass_status_rev", ASCENDING)], name="next_check_at_1"
    )
    await client.close()

    result = subprocess.run(
        [sys.executable, "-m", "consumer", *command],
        env={**os.environ, **service_env.env},
        cwd=REPO,
        capture_output=True,
        timeout=90,
        check=False,
    )

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("pass-status: error: MongoDB index 'next_check_at_1'"), last
    assert "dropIndex" in last
