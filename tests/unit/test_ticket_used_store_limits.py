"""The ticket-used handler against the store's limits (issue 12, item 3): it applies a
batch's users one read round at a time (so it never holds more than the read budget of
documents), and a user whose write MongoDB refuses for good is dead-lettered as
``store_rejected`` while the rest of the batch is applied and the batch completes.

The store here is a small in-memory stand-in for :class:`consumer.adapters.mongo.CacheStore`
(no server can be made to refuse a 16 MB update on demand); the adapter's own side is
tested against the real server in ``tests/integration/test_conditional_updates.py``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from consumer.adapters.kafka import OutRecord
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import OutboxScan
from consumer.domain.user_update import UserUpdate
from consumer.errors import DocumentRejectedError
from consumer.service.checklog import IntervalSummary
from consumer.service.deadletter import InputRecord
from consumer.service.outbox import OutboxRelay
from consumer.service.relay_ledger import RelayLedger
from consumer.service.ticket_used import TicketUsedHandler
from consumer.service.writer import UserWriter
from prometheus_client import CollectorRegistry

from tests.integration.factories import a_pass, a_user, ticket_used
from tests.unit.fakes import FakeCacheStore

ROUND = 2  # users per read round of the stand-in store


class RoundsStore:
    """Documents by user; reads in rounds of ``ROUND`` users; refuses writes of ``refused``.

    Its methods have the port's signatures; not every argument is needed here.
    """

    def __init__(self, docs: list[dict[str, Any]], refused: set[int]) -> None:
        self.docs = {d["user_id"]: d for d in docs}
        self.refused = refused
        self.written: list[int] = []
        self.rounds: list[list[int]] = []
        self.unfinished_when_next_round_read: list[int] = []

    async def find_user(self, user_id: int) -> dict[str, Any] | None:
        return copy.deepcopy(self.docs.get(user_id))

    async def find_users(self, user_ids: Sequence[int]) -> AsyncIterator[dict[int, Any]]:
        found = [u for u in dict.fromkeys(user_ids) if u in self.docs]
        for start in range(0, len(found), ROUND):
            if self.rounds:  # the previous round must be finished before this one is read
                done = set(self.written) | self.refused
                self.unfinished_when_next_round_read += [
                    u for u in self.rounds[-1] if u not in done
                ]
            batch = found[start : start + ROUND]
            self.rounds.append(batch)
            yield {u: copy.deepcopy(self.docs[u]) for u in batch}

    async def write_user(self, read: Mapping[str, Any], update: UserUpdate, now: datetime) -> bool:  # noqa: ARG002
        user_id = int(read["user_id"])
        if user_id in self.refused:
            raise DocumentRejectedError(f"user {user_id}: too large", user_id=user_id)
        self.written.append(user_id)
        return True

    async def write_users(
        self, writes: Sequence[tuple[Mapping[str, Any], UserUpdate]], now: datetime
    ) -> list[bool | Exception]:
        """An unordered bulk: a refused user fails alone."""
        outcomes: list[bool | Exception] = []
        for read, update in writes:
            try:
                outcomes.append(await self.write_user(read, update, now))
            except DocumentRejectedError as exc:
                outcomes.append(exc)
        return outcomes

    async def clear_outbox(self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> None:  # noqa: ARG002
        return None

    async def reject_outbox_entries(
        self,
        docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],  # noqa: ARG002
    ) -> None:
        return None

    def due_users(self, tick_at: datetime, shard: int, shards: int) -> AsyncIterator[Any]:
        raise NotImplementedError

    def all_users(self, user_id: int | None) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def scan_outboxes(self, *_: Any) -> OutboxScan:
        return OutboxScan(0, [])

    async def register_relay_source(self, token: str, host: str, now: datetime) -> int:  # noqa: ARG002
        return 1

    async def retire_relay_sources(self, *_: Any) -> int:
        return 0

    async def save_relay_watermark(self, *_: Any, **__: Any) -> None:
        return None

    async def relay_watermarks(self, *, include_done: bool) -> dict[int, Any]:  # noqa: ARG002
        return {}

    async def ping(self) -> None:
        return None

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int:  # noqa: ARG002
        return 0


class Published:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)


def _handler(store: RoundsStore, publisher: Published) -> TicketUsedHandler:
    metrics = Metrics(CollectorRegistry())
    ledger = RelayLedger(999)
    return TicketUsedHandler(
        store,
        UserWriter(store, metrics, 3, ledger),
        OutboxRelay(store, publisher, metrics, "status", ledger),
        publisher,
        IntervalSummary(),
        metrics,
        group_id="g",
        dead_letter_topic="dead",
        max_message_bytes=65536,
        concurrency=4,
    )


def _batch(users: list[int], passes: dict[int, str]) -> list[InputRecord]:
    used_at = datetime.now(UTC) - timedelta(minutes=1)
    return [
        InputRecord(
            "ticket-used",
            0,
            offset,
            str(u).encode(),
            orjson.dumps(ticket_used(u, passes.get(u, "no-such-pass"), used_at)),
            0,
        )
        for offset, u in enumerate(users)
    ]


def _world(users: list[int]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    passes = {u: str(uuid.uuid4()) for u in users}
    docs = [{"_id": f"d{u}", **a_user(u, [a_pass(pass_uuid=passes[u])])} for u in users]
    return docs, passes


async def test_each_read_round_is_applied_before_the_next_is_read() -> None:
    users = [1, 2, 3, 4, 5]
    docs, passes = _world(users)
    store = RoundsStore(docs, refused=set())
    publisher = Published()

    await _handler(store, publisher).handle(_batch([*users, 99], passes))

    assert store.rounds == [[1, 2], [3, 4], [5]]
    assert store.unfinished_when_next_round_read == []
    assert sorted(store.written) == users
    dead = [orjson.loads(r.value) for r in publisher.records if r.topic == "dead"]
    assert [d["reason"] for d in dead] == ["unknown_user"]


async def test_a_refused_user_is_dead_lettered_and_the_batch_goes_on() -> None:
    users = [1, 2, 3]
    docs, passes = _world(users)
    store = RoundsStore(docs, refused={2})
    publisher = Published()

    await _handler(store, publisher).handle(_batch(users, passes))

    assert sorted(store.written) == [1, 3]
    dead = [orjson.loads(r.value) for r in publisher.records if r.topic == "dead"]
    assert [(d["reason"], d["source_offset"]) for d in dead] == [("store_rejected", 1)]
    assert "user 2" in dead[0]["message"]
    changes = [orjson.loads(r.value) for r in publisher.records if r.topic == "status"]
    assert sorted(c["user_id"] for c in changes) == [1, 3]


async def test_integral_double_user_id_gets_its_ticket_used_applied_not_unknown_user() -> None:
    docs, passes = _world([42])
    store = FakeCacheStore(*[{**d, "user_id": 42.0} for d in docs])
    publisher = Published()

    await _handler(store, publisher).handle(_batch([42], passes))  # type: ignore[arg-type]

    dead = [orjson.loads(r.value) for r in publisher.records if r.topic == "dead"]
    assert dead == []
    (doc,) = store.cache.find({"user_id": 42})
    assert doc["passes"][0]["payload"]["first_use"]
    changes = [orjson.loads(r.value) for r in publisher.records if r.topic == "status"]
    assert [(c["user_id"], c["status_log"]) for c in changes] == [(42, "USABLE -> USING")]
