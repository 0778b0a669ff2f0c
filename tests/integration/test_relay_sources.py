"""Relay sources on the real server: registration, watermarks, retirement, and the scan for
outboxes not known published (``consumer/adapters/mongo_outbox.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from consumer.adapters.mongo import MongoCacheStore
from consumer.domain.outbox import OUTBOX, OUTBOX_RELAY, OUTBOX_SINCE
from consumer.domain.watermarks import MAX_SEQ, Watermark, relay_key
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_sources_get_numbers_never_used_before_and_a_lost_answer_keeps_its_own(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    first = await cache_store.register_relay_source("token-a", "host-a", NOW)
    second = await cache_store.register_relay_source("token-b", "host-b", NOW)
    assert (first, second) == (1, 2)
    # Another process takes number 3 between this one's read of the last number and its
    # insert: this one gets 4.
    relays = mongo_db["pass_status_relays"]
    taken = {"_id": 3, "token": "token-c", "through": 0, "unsettled": [], "done": False}
    original_find_one = relays.find_one
    calls = 0

    async def find_one_then_race(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await original_find_one(*args, **kwargs)
        if calls == 1:
            await relays.insert_one(taken)
        return found

    cache_store._relays.collection = cast("Any", _Proxy(relays, find_one_then_race))
    assert await cache_store.register_relay_source("token-d", "host-d", NOW) == 4
    assert await cache_store.relay_watermarks(include_done=True) == {
        n: Watermark() for n in (1, 2, 3, 4)
    }


class _Proxy:
    """A collection whose ``find_one`` is replaced (the race above); the rest is real."""

    def __init__(self, collection: Any, find_one: Any) -> None:
        self._collection = collection
        self.find_one = find_one

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


async def test_saved_watermarks_are_read_back_and_done_sources_only_when_asked(
    cache_store: MongoCacheStore,
) -> None:
    live = await cache_store.register_relay_source("t1", "h", NOW)
    stopped = await cache_store.register_relay_source("t2", "h", NOW)
    await cache_store.save_relay_watermark(live, Watermark(7, frozenset({3, 5})), NOW, done=False)
    await cache_store.save_relay_watermark(stopped, Watermark(9), NOW, done=True)

    assert await cache_store.relay_watermarks(include_done=False) == {
        live: Watermark(7, frozenset({3, 5}))
    }
    assert (await cache_store.relay_watermarks(include_done=True))[stopped] == Watermark(9)


async def test_a_silent_source_is_retired_unless_it_still_holds_unpublished_entries(
    cache_store: MongoCacheStore,
) -> None:
    old = NOW - timedelta(hours=1)
    crashed, holding, alive = [
        await cache_store.register_relay_source(f"t{n}", "h", old) for n in range(3)
    ]
    await cache_store.save_relay_watermark(alive, Watermark(1), NOW, done=False)

    retired = await cache_store.retire_relay_sources(NOW - timedelta(minutes=15), {holding})

    assert retired == 1
    assert set(await cache_store.relay_watermarks(include_done=False)) == {holding, alive}
    # A source retired while alive (its saves failed that long) comes back at its next save.
    await cache_store.save_relay_watermark(crashed, Watermark(2), NOW, done=False)
    assert crashed in await cache_store.relay_watermarks(include_done=False)


async def test_the_scan_finds_exactly_the_outboxes_not_known_published(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await cache_store.ensure_indexes()
    written = (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")

    def doc(user_id: int, key: int | None, **extra: object) -> Document:
        entry = {"event_id": f"e{user_id}", "user_id": user_id, "detected_at": written}
        return {"user_id": user_id, "passes": [], OUTBOX: [entry], OUTBOX_RELAY: key, **extra}

    await mongo_db["bytemark_tickets_cache"].insert_many(
        [
            doc(1, relay_key(5, 4)),  # published: below through
            doc(2, relay_key(5, 5)),  # unsettled
            doc(3, relay_key(5, 9)),  # above through
            doc(4, relay_key(6, 1)),  # the next source: not asked for
            doc(5, None, **{OUTBOX_SINCE: NOW - timedelta(minutes=5)}),  # an earlier version's
            doc(6, relay_key(4, MAX_SEQ)),  # the source before: not asked for
            {"user_id": 7, "passes": [], OUTBOX: [], OUTBOX_RELAY: relay_key(5, 9)},
        ]
    )
    marks = {5: Watermark(8, frozenset({5}))}

    scan = await cache_store.scan_outboxes(NOW, 10, marks, NOW - timedelta(minutes=1))
    assert sorted(d["user_id"] for d in scan.orphans) == [2, 3, 5]
    assert scan.backlog == 3
    assert scan.unpublished_keys == {relay_key(5, 5), relay_key(5, 9)}
    young = await cache_store.scan_outboxes(NOW, 10, marks, NOW - timedelta(minutes=10))
    assert young.backlog == 0  # written within the in-flight grace: not yet counted
    not_old_enough = await cache_store.scan_outboxes(NOW - timedelta(minutes=10), 10, marks)
    assert not_old_enough.orphans == []
