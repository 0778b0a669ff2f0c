"""A batch's read is one round trip: the first reply holds every user the batch names.

By default a driver's ``find`` returns 101 documents and fetches the rest with ``getMore``
round trips (two or three per batch of 500 users in the issue-20 benchmark), each a wait
of the whole batch on the store.
"""

from __future__ import annotations

from datetime import timedelta

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user
from tests.integration.harness import ServiceEnv

Collection = AsyncCollection[dict[str, object]]


async def test_a_batch_of_500_users_is_read_in_one_round_trip(
    service_env: ServiceEnv, cache: Collection
) -> None:
    users = range(7000, 7500)
    await cache.insert_many([a_user(uid, [a_pass("USABLE", timedelta(hours=1))]) for uid in users])
    metrics = Metrics(CollectorRegistry())
    client = make_client(service_env.settings, metrics)
    try:
        store = MongoCacheStore(client, service_env.settings, metrics)
        found = {uid for docs in [d async for d in store.find_users(list(users))] for uid in docs}
    finally:
        await client.close()

    assert found == set(users)
    sent = {
        s.labels["command"]: s.value
        for family in metrics.registry.collect()
        if family.name == "pass_status_mongodb_commands"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert sent.get("find") == 1
    assert sent.get("getMore", 0) == 0
