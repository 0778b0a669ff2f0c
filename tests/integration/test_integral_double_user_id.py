"""A ``user_id`` stored as an integral double (``42.0``, as the Node.js refresher writes
every number) is user 42 for the store adapter too: its ticket-used event is applied, not
dead-lettered as ``unknown_user`` (issue 19)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
from consumer.adapters.kafka import OutRecord
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore
from consumer.bootstrap import build_parts
from consumer.service.deadletter import InputRecord
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document
from tests.integration.factories import a_pass, a_user, ticket_used


class Published:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)

    def values(self, topic: str) -> list[dict[str, object]]:
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]


async def test_integral_double_user_id_gets_its_ticket_used_applied(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await cache_store.ensure_indexes()
    pass_uuid = str(uuid.uuid4())
    await mongo_db["bytemark_tickets_cache"].insert_one(
        {**a_user(42, [a_pass(pass_uuid=pass_uuid)]), "user_id": 42.0}
    )
    published = Published()
    settings = Settings(topic_dead_letter="dead", topic_status_changed="status")
    handler = build_parts(
        settings, cache_store, published, Metrics(CollectorRegistry())
    ).ticket_used
    event = ticket_used(42, pass_uuid, datetime.now(UTC) - timedelta(minutes=1))

    await handler.handle([InputRecord("ticket-used", 0, 0, b"42", orjson.dumps(event), 0)])

    assert published.values("dead") == []
    doc = await mongo_db["bytemark_tickets_cache"].find_one({"user_id": 42})
    assert doc is not None
    assert doc["user_id"] == 42.0  # the refresher's field is left as it wrote it
    assert isinstance(doc["user_id"], float)
    assert doc["passes"][0]["status"] == "USING"
    assert doc["passes"][0]["payload"]["first_use"] == event["used_at"]
    changes = published.values("status")
    assert [(c["user_id"], c["status_log"]) for c in changes] == [(42, "USABLE -> USING")]
    # Its watermark never saved (as after a crash), another replica's orphan relay
    # publishes it again and clears it by a filter naming user_id 42: it matches 42.0.
    survivor = build_parts(settings, cache_store, published, Metrics(CollectorRegistry()))
    await survivor.relay.relay_orphans(datetime.now(UTC) + timedelta(hours=1), timedelta(0))
    cleared = await mongo_db["bytemark_tickets_cache"].find_one({"user_id": 42})
    assert cleared is not None
    assert cleared["pass_status_outbox"] == []
    assert len(published.values("status")) == 2
    # The single-user reads (ticks' find_user, a full sweep of one user) find it too.
    assert await cache_store.find_user(42) is not None
    assert [d["user_id"] async for d in cache_store.all_users(42)] == [42.0]
