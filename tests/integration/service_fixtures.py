"""Fixtures for tests of the running service: an isolated deployment per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.harness import ConsumerProcess, ServiceEnv, all_topics, service_environment


@pytest.fixture
async def service_env(
    kafka_bootstrap: str, mongodb_uri: str, unique_name: str
) -> AsyncIterator[ServiceEnv]:
    """Topics (3 partitions each), database and group names of this test only."""
    service = service_environment(unique_name, kafka_bootstrap, mongodb_uri)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    topics = all_topics(service.settings)
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics]
        )
        yield service
    finally:
        await admin.delete_topics(topics)
        await admin.close()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        await client.drop_database(service.settings.mongodb_database)
        await client.close()


@pytest.fixture
async def cache(
    service_env: ServiceEnv, mongodb_uri: str
) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    """The test deployment's cache collection (tz-aware dates)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    settings = service_env.settings
    yield client[settings.mongodb_database][settings.collection_cache]
    await client.close()


@pytest.fixture
async def check_logs(
    service_env: ServiceEnv, mongodb_uri: str
) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    settings = service_env.settings
    yield client[settings.mongodb_database][settings.collection_check_log]
    await client.close()


@pytest.fixture
def consumers(service_env: ServiceEnv) -> Iterator[list[ConsumerProcess]]:
    """Consumer processes started by the test; any still running are killed at the end."""
    started: list[ConsumerProcess] = []
    yield started
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()
