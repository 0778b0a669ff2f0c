"""The store-contract suite: every MongoDB behaviour the service relies on, stated against
whichever server ``PASS_STATUS_MONGODB_URI`` names.

Unset, the suite uses the local store that ``scripts/services up`` starts (as the
integration tests do). Set, it talks to that server only and needs nothing else (no
Kafka): this is how an operator checks their own MongoDB before deploying (README, "Check
your own MongoDB"). Every test gets a database of its own, dropped afterwards. A server
that cannot be reached FAILS the suite; it is never skipped.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.conftest import SERVICES_SCRIPT

HERE = Path(__file__).resolve().parent
SERVICES_UP_TIMEOUT_S = 900  # the first run may build the local store

Document = dict[str, Any]
MakeClient = Callable[..., AsyncMongoClient[Document]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/store with ``store``."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.store)


def _local_store_uri() -> str:
    def services(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SERVICES_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=SERVICES_UP_TIMEOUT_S,
            check=False,
        )

    up = services("up")
    if up.returncode != 0:
        pytest.fail(
            f"the local store is not available (scripts/services up exited {up.returncode}):\n"
            f"{up.stderr}{up.stdout}",
            pytrace=False,
        )
    env = services("env").stdout
    match = re.search(r"^export PASS_STATUS_MONGODB_URI=(\S+)$", env, re.MULTILINE)
    if match is None:
        pytest.fail(f"scripts/services env names no MongoDB URI:\n{env}", pytrace=False)
    return match[1]


@pytest.fixture(scope="session")
def store_uri() -> str:
    """The server under test: ``PASS_STATUS_MONGODB_URI``, else the local store."""
    return os.environ.get("PASS_STATUS_MONGODB_URI") or _local_store_uri()


def _client(uri: str, **options: Any) -> AsyncMongoClient[Document]:
    # As the service's client (consumer.adapters.mongo.make_client): timezone-aware dates.
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=60_000,
        appname="pass-status-store-contract",
        **options,
    )


@pytest.fixture(scope="session")
async def store_client(store_uri: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = _client(store_uri)
    try:
        await client.admin.command("ping")
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server fails the suite
        await client.close()
        pytest.fail(f"cannot reach the store under test: {exc}", pytrace=False)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def store_db_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    return f"s_{base.removeprefix('test_')[:40].rstrip('_')}_{secrets.token_hex(4)}"


@pytest.fixture
async def store_db(
    store_client: AsyncMongoClient[Document], store_db_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A database of this test only, dropped afterwards."""
    yield store_client[store_db_name]
    await store_client.drop_database(store_db_name)


@pytest.fixture
async def make_client(store_uri: str) -> AsyncIterator[MakeClient]:
    """``make_client(**options)``: another client with its own connections."""
    made: list[AsyncMongoClient[Document]] = []

    def make(**options: Any) -> AsyncMongoClient[Document]:
        client = _client(store_uri, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
