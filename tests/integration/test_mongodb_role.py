"""docs/operations.md, "MongoDB role": the custom role grants what the service uses, and no more.

The local FerretDB has no access control, so the role cannot be enforced here. Instead every
command the service sends during its MongoDB work (index builds, a full sweep with
checkpoints and its outbox relay, the outbox scan, a retried check-log insert, an unreadable
user marked) is recorded by command monitoring and turned into the privilege actions MongoDB
requires for it; the role in the runbook must grant exactly those per collection
(``createCollection`` aside: implicit creation on a first start cannot be observed once).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from consumer import app
from consumer.adapters import mongo
from consumer.domain.events import Cause, CauseType
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection

from tests.conftest import REPO
from tests.integration.factories import a_pass, a_user
from tests.integration.harness import ServiceEnv

RUNBOOK = REPO / "docs" / "operations.md"
ROLE_ENTRY = re.compile(
    r'\{resource: \{db: "cache", collection: "([\w.]+)"\},\s*actions: \[([^\]]*)\]\}'
)
# Commands that need no privilege on a collection: handshakes, health, the driver's own
# cursors and sessions.
UNPRIVILEGED = {"hello", "isMaster", "ismaster", "ping", "buildInfo", "endSessions", "killCursors"}
READS = {"find", "getMore", "aggregate", "count", "distinct"}


class Privileges(monitoring.CommandListener):
    """The (collection, action) pairs MongoDB checks for each command sent."""

    def __init__(self) -> None:
        self.used: set[tuple[str, str]] = set()
        self.unknown: set[str] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, body = event.command_name, event.command
        if name in UNPRIVILEGED:
            return
        collection = str(body["collection"] if name == "getMore" else body[name])
        if name in READS:
            self.used.add((collection, "find"))
        elif name == "update":
            self.used.add((collection, "update"))
            if any(u.get("upsert") for u in body.get("updates", [])):
                self.used.add((collection, "insert"))
        elif name == "insert":
            self.used.add((collection, "insert"))
        elif name == "delete":
            self.used.add((collection, "remove"))
        elif name == "createIndexes":
            self.used.add((collection, "createIndex"))
        elif name == "listIndexes":
            self.used.add((collection, "listIndexes"))
        else:
            self.unknown.add(name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def runbook_role() -> set[tuple[str, str]]:
    granted = {
        (collection, action.strip().strip('"'))
        for collection, actions in ROLE_ENTRY.findall(RUNBOOK.read_text())
        for action in actions.split(",")
        if action.strip()
    }
    assert granted, "no role privileges found in docs/operations.md"
    return granted


async def test_runbook_role_grants_exactly_the_actions_the_service_uses(
    service_env: ServiceEnv,
    cache: AsyncCollection[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = Privileges()

    def monitored_client(uri: str, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
        listeners = [*options.pop("event_listeners", []), listener]
        return AsyncMongoClient(uri, event_listeners=listeners, **options)

    monkeypatch.setattr(mongo, "AsyncMongoClient", monitored_client)
    now = datetime.now(UTC)
    expired = a_pass(expires_in=timedelta(hours=-1))
    await cache.insert_many(
        [a_user(500 + n, [expired if n % 2 else a_pass()]) for n in range(5)]
        + [{"user_id": 600, "passes": "not a list"}]
    )
    # Checkpoints every 2 users, so the sweep saves, reads and prunes them.
    settings = dataclasses.replace(service_env.settings, sweep_batch_size=2)
    async with app.core(settings) as c:
        await c.producer.start()
        await c.store.ensure_indexes()
        result = await c.sweeper.full(None, True, now, Cause(CauseType.TICK, "role-test"))
        assert result is not None
        await c.store.scan_outboxes(now + timedelta(minutes=5), 10, c.relay.ledger.watermarks())
        async for doc in c.store.unreadable_users(0):
            await c.store.mark_unreadable(doc, now)
        logs = c.client[settings.mongodb_database][settings.collection_check_log]
        written = await logs.find_one({})
        assert written is not None, "the full sweep wrote no check log"
        await c.store.insert_check_log(written)  # a retried insert meets its own _id

    assert not listener.unknown, f"commands with no action mapping: {listener.unknown}"
    names = {
        settings.collection_cache: "bytemark_tickets_cache",
        settings.collection_check_log: "bytemark_cache_status_check_log",
        "pass_status_sweeps": "pass_status_sweeps",
        "pass_status_relays": "pass_status_relays",
    }
    used = {(names.get(coll, coll), action) for coll, action in listener.used}
    granted = runbook_role()
    assert used - granted == set(), "the service needs actions the runbook role lacks"
    unused = {p for p in granted - used if p[1] != "createCollection"}
    assert unused == set(), "the runbook role grants actions the service never uses"
