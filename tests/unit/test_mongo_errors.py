"""How the store adapter classifies MongoDB's errors: a document over the BSON size limit is
refused for good (:class:`DocumentRejectedError`, dead-lettered as ``bad_document``), an
unreachable server is transient. The server's answers are the ones MongoDB gives (a
``WriteError`` with code 17419 for an update whose result exceeds 16 MB); the local store
does not produce them, so a collection standing in for the server raises them here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore
from consumer.domain.events import Cause, CauseType
from consumer.domain.user_update import plan_user_update
from consumer.errors import ConfigError, DocumentRejectedError, StoreUnavailableError
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, WriteError

from tests.integration.factories import a_pass, a_user
from tests.unit.fakes import STAMP

TOO_LARGE = WriteError(
    "Resulting document after update is larger than 16777216",
    17419,
    {"code": 17419, "codeName": "Location17419", "errmsg": "Resulting document..."},
)


class _Refusing:
    """A cache collection whose updates fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def update_one(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.error


@pytest.fixture
async def store() -> AsyncIterator[MongoCacheStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1", connect=False
    )
    try:
        yield MongoCacheStore(client, Settings(), Metrics(CollectorRegistry()))
    finally:
        await client.close()


async def _write(store: MongoCacheStore, error: Exception) -> None:
    now = datetime.now(UTC)
    read = {"_id": "d1", **a_user(77, [a_pass(expires_in=timedelta(hours=-1), now=now)])}
    plan = plan_user_update(read, [], now, Cause(CauseType.TICK, "t"), relaying=STAMP)
    store._cache = _Refusing(error)  # type: ignore[assignment]
    await store.write_user(read, plan, now)


@pytest.mark.parametrize("code", [17419, 17420, 10334])
async def test_a_result_over_16_mb_is_rejected_for_good(store: MongoCacheStore, code: int) -> None:
    error = WriteError("document too large", code, {"code": code})

    with pytest.raises(DocumentRejectedError) as caught:
        await _write(store, error)

    assert caught.value.user_id == 77
    assert caught.value.reason == "store_rejected"
    assert caught.value.code == code
    assert caught.value.retriable is False


async def test_mongodb_answer_for_an_oversized_update_is_rejected(store: MongoCacheStore) -> None:
    with pytest.raises(DocumentRejectedError, match="larger than 16777216"):
        await _write(store, TOO_LARGE)


async def test_other_write_errors_and_outages_stay_transient(store: MongoCacheStore) -> None:
    with pytest.raises(StoreUnavailableError):
        await _write(store, WriteError("not primary", 10107, {"code": 10107}))
    with pytest.raises(StoreUnavailableError):
        await _write(store, AutoReconnect("connection reset"))


def test_the_read_budget_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="PASS_STATUS_READ_BATCH_MAX_BYTES"):
        Settings.from_env({"PASS_STATUS_READ_BATCH_MAX_BYTES": "0"})
