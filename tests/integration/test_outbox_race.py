"""The outbox marker race (issue 12, item 1) against the real store, ``MongoCacheStore``.

A sweep reads a document whose outbox holds an owner's entry; the owner clears it; the
sweep then writes from its stale read. The write must be refused (its condition covers
the outbox and its marker), and the re-read write must leave its entry findable by the
orphan scan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from consumer.domain.events import Cause, CauseType
from consumer.domain.outbox import OUTBOX, OUTBOX_SINCE
from consumer.domain.user_update import plan_user_update
from consumer.domain.watermarks import Watermark
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.unit.fakes import STAMP

NOW = datetime.now(UTC).replace(microsecond=0)
TICK = Cause(CauseType.TICK, "tick-1")


@pytest.fixture
async def store(
    mongodb_uri: str, mongo_db: AsyncDatabase[Document]
) -> AsyncIterator[MongoCacheStore]:
    settings = Settings.from_env(
        {"PASS_STATUS_MONGODB_URI": mongodb_uri, "PASS_STATUS_MONGODB_DATABASE": mongo_db.name}
    )
    client = make_client(settings)
    try:
        yield MongoCacheStore(client, settings, Metrics(CollectorRegistry()))
    finally:
        await client.close()


def _pass(uuid: str, expiration: datetime) -> Document:
    return {
        "pass_uuid": uuid,
        "status": "USING",
        "payload": {"expiration": expiration.isoformat(), "first_use": "x"},
    }


async def test_a_write_from_a_read_older_than_a_clear_is_refused_and_its_retry_is_findable(
    store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    owners = [{"event_id": "ev-a", "user_id": 7, "pass_uuid": "a"}]
    await mongo_db["bytemark_tickets_cache"].insert_one(
        {
            "_id": "d7",
            "user_id": 7,
            "passes": [_pass("a", NOW + timedelta(days=1)), _pass("b", NOW - timedelta(hours=1))],
            OUTBOX: owners,
            OUTBOX_SINCE: NOW - timedelta(seconds=1),
        }
    )
    stale = await store.find_user(7)  # the sweep reads
    assert stale is not None
    await store.clear_outbox([("d7", owners)])  # the owner clears its acknowledged entry

    update = plan_user_update(stale, (), NOW, TICK, relaying=STAMP)
    assert [t.status_log for t in update.evaluation.transitions] == ["USING -> EXPIRED"]
    assert await store.write_user(stale, update, NOW) is False  # the sweep's stale write

    fresh = await store.find_user(7)
    assert fresh is not None
    assert (
        await store.write_user(fresh, plan_user_update(fresh, (), NOW, TICK, relaying=STAMP), NOW)
        is True
    )
    scan = await store.scan_outboxes(NOW + timedelta(hours=1), 10, {999: Watermark()})
    assert scan.backlog == 1
    assert [[e["status_log"] for e in d[OUTBOX]] for d in scan.orphans] == [["USING -> EXPIRED"]]
