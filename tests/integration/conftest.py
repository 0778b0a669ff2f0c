"""Fixtures for tests against the real Kafka and MongoDB-compatible server.

Connection settings come from ``PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS`` and
``PASS_STATUS_MONGODB_URI``. Whatever is unset is started locally, once per test
session, by ``scripts/services up`` (which also checks that a server named by
those variables answers). A server that cannot be reached FAILS the tests that
need it; they are never skipped.

Every test gets its own names (``unique_name``): topics, databases and consumer
groups never collide between tests or between concurrent test runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.conftest import SERVICES_SCRIPT

HERE = Path(__file__).resolve().parent
SERVICES_UP_TIMEOUT_S = 900  # the first run may resolve Kafka and build FerretDB
TOPIC_READY_TIMEOUT_S = 30.0

Document = dict[str, Any]
MakeTopics = Callable[..., Awaitable[list[str]]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with ``integration``."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def _services(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVICES_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=SERVICES_UP_TIMEOUT_S,
        check=False,
    )


def _parse_exports(text: str) -> dict[str, str]:
    exports: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"export (PASS_STATUS_[A-Z_]+)=(\S+)", line.strip())
        if match:
            exports[match[1]] = match[2]
    return exports


@pytest.fixture(scope="session")
def service_addresses() -> dict[str, str]:
    """Kafka bootstrap servers and MongoDB URI, the servers verified to answer."""
    up = _services("up")
    if up.returncode != 0:
        pytest.fail(
            "the integration services are not available "
            f"(scripts/services up exited {up.returncode}):\n{up.stderr}{up.stdout}",
            pytrace=False,
        )
    env = _services("env")
    if env.returncode != 0:
        pytest.fail(f"scripts/services env failed:\n{env.stderr}", pytrace=False)
    local = _parse_exports(env.stdout)
    names = ("PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS", "PASS_STATUS_MONGODB_URI")
    return {name: os.environ.get(name) or local[name] for name in names}


@pytest.fixture(scope="session")
def kafka_bootstrap(service_addresses: dict[str, str]) -> str:
    """Bootstrap servers of a ready Kafka (``host:port[,host:port...]``)."""
    return service_addresses["PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def mongodb_uri(service_addresses: dict[str, str]) -> str:
    """URI of a ready MongoDB-compatible server."""
    return service_addresses["PASS_STATUS_MONGODB_URI"]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``t_<test name>_<random hex>``: valid as a topic, database and group name."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    base = base.removeprefix("test_")[:40].rstrip("_")
    return f"t_{base}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
async def mongo_client(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    """One client for the session (timezone-aware datetimes)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=10_000, appname="pass-status-tests"
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[Document], unique_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A database of this test only, dropped afterwards."""
    yield mongo_client[unique_name]
    await mongo_client.drop_database(unique_name)


@pytest.fixture
async def cache_store(mongodb_uri: str, mongo_db: AsyncDatabase[Document]) -> AsyncIterator[Any]:
    """The service's :class:`MongoCacheStore` on this test's database (default settings)."""
    from consumer.adapters.metrics import Metrics  # noqa: PLC0415 - only the store tests need it
    from consumer.adapters.mongo import MongoCacheStore, make_client  # noqa: PLC0415
    from consumer.settings import Settings  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    settings = Settings.from_env(
        {"PASS_STATUS_MONGODB_URI": mongodb_uri, "PASS_STATUS_MONGODB_DATABASE": mongo_db.name}
    )
    client = make_client(settings)
    try:
        yield MongoCacheStore(client, settings, Metrics(CollectorRegistry()))
    finally:
        await client.close()


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient``, closed afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="pass-status-tests")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _wait_for_leaders(admin: Any, names: list[str], partitions: int) -> None:
    deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        ready = [
            t
            for t in described
            if t.get("error_code") == 0
            and len(t.get("partitions", [])) == partitions
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
        ]
        if len(ready) == len(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} have no leaders after {TOPIC_READY_TIMEOUT_S}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def make_topics(kafka_admin: Any) -> AsyncIterator[MakeTopics]:
    """``await make_topics(names, partitions=3)`` creates topics (leaders elected)
    and returns their names; they are deleted after the test."""
    created: list[str] = []

    async def make(names: Iterable[str], partitions: int = 3) -> list[str]:
        wanted = list(names)
        response = await kafka_admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in wanted]
        )
        errors = [e for e in getattr(response, "topic_errors", []) if e[1] != 0]
        created.extend(n for n in wanted if n not in {e[0] for e in errors})
        if errors:
            raise RuntimeError(f"creating topics failed: {errors}")
        await _wait_for_leaders(kafka_admin, wanted, partitions)
        return wanted

    yield make
    if created:
        try:
            await kafka_admin.delete_topics(created)
        except KafkaError as exc:  # cleanup only: the test's result stands
            print(f"could not delete topics {created}: {exc!r}")  # noqa: T201
