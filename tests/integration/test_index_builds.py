"""Index builds at start get their own deadline, not the socket timeout of hot operations:
a first start on a collection of millions of users builds indexes for minutes, and with
the 10 s socket timeout the service failed to start (found by the 1,000,000-user bench).
"""

from __future__ import annotations

from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore
from consumer.settings import Settings
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document


class _CreateIndexes(monitoring.CommandListener):
    """The ``maxTimeMS`` of each ``createIndexes`` command sent (None: no deadline)."""

    def __init__(self) -> None:
        self.deadlines_ms: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "createIndexes":
            self.deadlines_ms.append(event.command.get("maxTimeMS"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_index_builds_have_the_index_deadline_not_the_socket_timeout(
    mongodb_uri: str, mongo_db: AsyncDatabase[Document]
) -> None:
    settings = Settings.from_env(
        {
            "PASS_STATUS_MONGODB_URI": mongodb_uri,
            "PASS_STATUS_MONGODB_DATABASE": mongo_db.name,
            "PASS_STATUS_MONGODB_INDEX_TIMEOUT_MS": "900000",
        }
    )
    listener = _CreateIndexes()
    # The socket timeout the service's client has (make_client): 10 s.
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb_uri, socketTimeoutMS=10_000, event_listeners=[listener]
    )
    try:
        await MongoCacheStore(client, settings, Metrics(CollectorRegistry())).ensure_indexes()
    finally:
        await client.close()
    assert len(listener.deadlines_ms) == 8  # 5 on the cache, 3 on pass_status_sweeps
    # Within the driver's operation deadline, the socket waits as long as the server may.
    assert all(isinstance(d, int) and 10_000 < d <= 900_000 for d in listener.deadlines_ms), (
        listener.deadlines_ms
    )
