"""The outbox lifecycle under random interleavings, on the fakes (a property test).

Two replicas share one store and one topic. Hypothesis picks a sequence of steps: ticket-used
batches and due sweeps on either replica, a failed publish, a crash of a replica (its
ledger is lost: a fresh replica takes its place, its last watermark never saved), watermark
saves and orphan relays. After the steps, the survivors save their watermarks and an orphan
relay runs, as the service's periodic jobs do. Then:

- nothing is lost: every event that was ever in an outbox was published (I1, I3);
- nothing is left unpublished, and every document's outbox is findable (I2);
- each pass's events were first published in the order of its transitions (I4);
- a re-publication carries the same ``event_id`` (I5: the same transition, one id).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from consumer.domain.events import Cause, CauseType
from consumer.domain.outbox import OUTBOX
from consumer.errors import BrokerUnavailableError, StoreUnavailableError
from consumer.service.deadletter import InputRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeCacheStore, FakePublisher, FakeService

USERS = (1, 2)
PASSES = ("a", "b")
STATUS_ORDER = {"USING": 0, "EXPIRED": 1}

STEP = st.one_of(
    st.tuples(
        st.just("ticket_used"), st.integers(0, 1), st.sampled_from(USERS), st.sampled_from(PASSES)
    ),
    st.tuples(st.just("sweep"), st.integers(0, 1), st.integers(1, 3)),
    st.tuples(st.just("publish_fails"), st.integers(0, 1)),
    st.tuples(st.just("store_fails"), st.sampled_from(["write_user", "clear_outbox"])),
    st.tuples(st.just("crash"), st.integers(0, 1)),
    st.tuples(st.just("save_watermark"), st.integers(0, 1)),
    st.tuples(st.just("orphans"), st.integers(0, 1)),
)


def _user(user_id: int, now: datetime) -> dict[str, Any]:
    expiration = (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return {
        "_id": f"d{user_id}",
        "user_id": user_id,
        "passes": [
            {
                "pass_uuid": f"{user_id}{p}",
                "status": "USABLE",
                "payload": {"expiration": expiration},
            }
            for p in PASSES
        ],
    }


def _ticket_used(user_id: int, pass_uuid: str, offset: int, now: datetime) -> InputRecord:
    body = {
        "event_id": f"tu-{offset}",
        "user_id": user_id,
        "pass_uuid": f"{user_id}{pass_uuid}",
        "used_at": now.isoformat().replace("+00:00", "Z"),
    }
    return InputRecord("ticket-used", 0, offset, str(user_id).encode(), orjson.dumps(body), None)


class _World:
    """Two replicas over one store and one topic; each step is one method."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.store = FakeCacheStore(*(_user(u, self.now) for u in USERS))
        self.publisher = FakePublisher()
        self.replicas = [FakeService(self.store, self.publisher) for _ in range(2)]

    async def ticket_used(self, offset: int, replica: int, user_id: int, pass_uuid: str) -> None:
        record = _ticket_used(user_id, pass_uuid, offset, self.now)
        await self.replicas[replica].ticket_used.handle([record])

    async def sweep(self, offset: int, replica: int, hours: int) -> None:
        tick = Cause(CauseType.TICK, f"tick-{offset}")
        await self.replicas[replica].sweeper.due(
            self.now + timedelta(hours=hours), 0, 1, True, tick
        )

    async def publish_fails(self, _offset: int, _replica: int) -> None:
        self.publisher.fail_next("publish", BrokerUnavailableError("kafka down"))

    async def store_fails(self, _offset: int, operation: str) -> None:
        self.store.fail_next(operation, StoreUnavailableError("store down"))

    async def crash(self, _offset: int, replica: int) -> None:
        self.replicas[replica] = FakeService(self.store, self.publisher)  # ledger lost

    async def save_watermark(self, _offset: int, replica: int) -> None:
        await self.replicas[replica].relay.keep_watermark(self.now)

    async def orphans(self, _offset: int, replica: int) -> None:
        # At the real time (every replica's clock), every entry old enough to be an orphan.
        await self.replicas[replica].relay.relay_orphans(datetime.now(UTC), timedelta(0))

    def in_outboxes(self) -> set[str]:
        return {e["event_id"] for d in self.store.cache.docs for e in d.get(OUTBOX) or []}


async def _run(steps: list[tuple[Any, ...]]) -> None:
    world = _World()
    store, publisher = world.store, world.publisher
    in_outboxes: set[str] = set()
    for offset, (kind, *args) in enumerate(steps):
        # A failed batch or sweep is retried later, or never: both must lose nothing.
        with contextlib.suppress(BrokerUnavailableError, StoreUnavailableError):
            await getattr(world, kind)(offset, *args)
        in_outboxes |= world.in_outboxes()

    # The periodic jobs of the survivors, on a clean system.
    store._failures.clear()  # faults not met by a step are over
    publisher._failures.clear()
    for replica in world.replicas:
        await replica.relay.keep_watermark(world.now)
    await world.replicas[0].relay.relay_orphans(
        world.now + timedelta(days=1), timedelta(seconds=30)
    )
    await world.replicas[0].relay.keep_watermark(world.now)
    _check(store, publisher.values(FakeService.STATUS_TOPIC), in_outboxes)


def _check(store: FakeCacheStore, events: list[dict[str, Any]], in_outboxes: set[str]) -> None:
    published = {e["event_id"] for e in events}
    assert in_outboxes <= published, "an event left an outbox unpublished"
    assert store.unpublished() == {}
    assert store.lost_outboxes() == []
    first_seen: dict[str, list[str]] = {}
    transitions: dict[str, tuple[str, str]] = {}
    for event in events:
        change = (event["pass_uuid"], event["to_status"])
        if event["event_id"] not in transitions:
            first_seen.setdefault(event["pass_uuid"], []).append(event["to_status"])
        assert transitions.setdefault(event["event_id"], change) == change  # I5
    for pass_uuid, statuses in first_seen.items():
        assert statuses == sorted(statuses, key=STATUS_ORDER.__getitem__), pass_uuid  # I4
    for doc in store.cache.docs:  # every transition the documents hold was published
        for p in doc["passes"]:
            if p["status"] != "USABLE":
                assert (p["pass_uuid"], p["status"]) in set(transitions.values())


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=14))
def test_no_event_is_lost_left_unpublished_or_reordered(steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(steps))
