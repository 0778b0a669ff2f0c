"""Relay sources on the real server: registration, watermarks, retirement, and the scan for
outboxes not known published (``consumer/adapters/mongo_outbox.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.adapters.mongo import MongoCacheStore
from consumer.domain.outbox import OUTBOX, OUTBOX_RELAY, OUTBOX_SINCE
from consumer.domain.watermarks import Watermark, relay_key
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.conftest import Document

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_a_source_registers_once_even_when_its_first_answer_was_lost(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await cache_store.register_relay_source("s1", "host-a", NOW)
    await cache_store.register_relay_source("s1", "host-a", NOW)  # a retried insert
    assert await cache_store.relay_watermarks(include_done=True) == {"s1": Watermark()}
    assert await mongo_db["pass_status_relays"].count_documents({}) == 1


async def test_saved_watermarks_are_read_back_and_done_sources_only_when_asked(
    cache_store: MongoCacheStore,
) -> None:
    for source in ("live", "stopped"):
        await cache_store.register_relay_source(source, "h", NOW)
    await cache_store.save_relay_watermark("live", Watermark(7, frozenset({3, 5})), NOW, done=False)
    await cache_store.save_relay_watermark("stopped", Watermark(9), NOW, done=True)

    assert await cache_store.relay_watermarks(include_done=False) == {
        "live": Watermark(7, frozenset({3, 5}))
    }
    assert (await cache_store.relay_watermarks(include_done=True))["stopped"] == Watermark(9)


async def test_a_silent_source_is_retired_unless_it_still_holds_unpublished_entries(
    cache_store: MongoCacheStore,
) -> None:
    old = NOW - timedelta(hours=1)
    for source in ("crashed", "holding", "alive"):
        await cache_store.register_relay_source(source, "h", old)
    await cache_store.save_relay_watermark("alive", Watermark(1), NOW, done=False)

    retired = await cache_store.retire_relay_sources(NOW - timedelta(minutes=15), {"holding"})

    assert retired == 1
    assert set(await cache_store.relay_watermarks(include_done=False)) == {"holding", "alive"}
    # A source retired while alive (its saves failed that long) comes back at its next save.
    await cache_store.save_relay_watermark("crashed", Watermark(2), NOW, done=False)
    assert "crashed" in await cache_store.relay_watermarks(include_done=False)


async def test_the_scan_finds_exactly_the_outboxes_not_known_published(
    cache_store: MongoCacheStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await cache_store.ensure_indexes()
    written = (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")

    def doc(user_id: int, key: str | None, **extra: object) -> Document:
        entry = {"event_id": f"e{user_id}", "user_id": user_id, "detected_at": written}
        return {"user_id": user_id, "passes": [], OUTBOX: [entry], OUTBOX_RELAY: key, **extra}

    await mongo_db["bytemark_tickets_cache"].insert_many(
        [
            doc(1, relay_key("a", 4)),  # published: below through
            doc(2, relay_key("a", 5)),  # unsettled
            doc(3, relay_key("a", 9)),  # above through
            doc(4, relay_key("ab", 9)),  # another source whose id extends "a": not asked for
            doc(5, None, **{OUTBOX_SINCE: NOW - timedelta(minutes=5)}),  # an earlier version's
            doc(6, relay_key("b", 1)),  # a done source: not asked for
            {"user_id": 7, "passes": [], OUTBOX: [], OUTBOX_RELAY: relay_key("a", 9)},
        ]
    )
    marks = {"a": Watermark(8, frozenset({5}))}

    scan = await cache_store.scan_outboxes(NOW, 10, marks, NOW - timedelta(minutes=1))
    assert sorted(d["user_id"] for d in scan.orphans) == [2, 3, 5]
    assert scan.backlog == 3
    assert scan.unpublished_keys == {relay_key("a", 5), relay_key("a", 9)}
    young = await cache_store.scan_outboxes(NOW, 10, marks, NOW - timedelta(minutes=10))
    assert young.backlog == 0  # written within the in-flight grace: not yet counted
    not_old_enough = await cache_store.scan_outboxes(NOW - timedelta(minutes=10), 10, marks)
    assert not_old_enough.orphans == []
