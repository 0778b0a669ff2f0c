"""The cost shape of the service's hot operations: at 100,000 documents each costs at most
5 times what it costs at 1,000 (an index lookup is flat in N; a scan is 100 times dearer).

Measured on three collections of 1,000, 10,000 and 100,000 documents, with the indexes
the service creates (``MongoCacheStore.ensure_indexes``):

- ``find_one({user_id})`` (``find_user``: every conflict re-read, ticks for one user);
- ``find({user_id: {$in: 500 ids}})`` (``find_users``: one ticket-used batch);
- ``update_one({_id, passes: <as read>})`` (the conditional write: one statement of
  ``write_users``' bulk per batch or sweep group, or ``write_user`` for a conflict's retry);
- the due query the service sends (``due_query``: ``next_check_at <= t``, or missing, or
  never evaluated), with a fixed number due among users half of whom hold only terminal
  passes, stored as the service stores them (``due_users``: every due tick);
- the query for documents whose ``user_id`` is not a number (``unreadable_query``: every
  full check), with a fixed number of them;
- the orphan relay's query for outboxes not known published (``unpublished_query``: every
  relay interval), where every document holds a relay key, all but a fixed number of them
  published according to the source's watermark.

The lookups (by ``user_id``, ``$in``, the unreadable ``user_id``s, the first page of the
full check sorted by ``user_id``) are measured again on collections of 1,000 and 20,000
documents whose ``user_id`` index is *unique*, as an operator's refresher may have made
it (issue 19): there, each costs at most twice as much at 20,000 as at 1,000.

Each repeat runs the operation on the three collections in turn, so that load from other
processes on the machine weighs on every size alike; the medians are compared. The bound
is generous on purpose: it tells an index from a scan, not a fast server from a slow one.
The figures are printed (``pytest -s``). Speed itself is measured in ``bench/``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from consumer.adapters.mongo_outbox import unpublished_query
from consumer.adapters.mongo_sweeps import due_query, unreadable_query
from consumer.domain.user_update import stored_next_check_at
from consumer.domain.watermarks import Watermark, relay_key
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from tests.store.conftest import Document

SIZES = (1_000, 10_000, 100_000)
BOUND = 5.0
DUE = 10
UNPUBLISHED = 10
SOURCE = 77
CHUNK = 2_000
NOW = datetime(2030, 1, 1, tzinfo=UTC)
# Repeats per operation (median taken); a slow operation stops repeating after its budget.
REPEATS = {
    "find by user_id": 31,
    "$in of 500 user ids": 9,
    "{_id, passes} write": 31,
    "due query": 9,
    "unreadable user_ids": 9,
    "unpublished outboxes": 9,
    "first page by user_id": 9,
}
UNIQUE_SIZES = (1_000, 20_000)
UNIQUE_BOUND = 2.0
UNIQUE_LOOKUPS = (
    "find by user_id",
    "$in of 500 user ids",
    "unreadable user_ids",
    "first page by user_id",
)
FIRST_PAGE = 100
SECONDS_PER_OPERATION = 20.0  # of all sizes together, checked after 3 repeats
Operation = Callable[[random.Random], Awaitable[float]]


def _user(user_id: int) -> Document:
    due = user_id <= DUE
    terminal = not due and user_id % 2 == 0  # most users of a long-lived cache
    expiration = (NOW + timedelta(days=30 + user_id % 300)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    next_check_at = NOW - timedelta(minutes=1) if due else NOW + timedelta(days=30)
    return {
        "_id": ObjectId(),
        "user_id": user_id,
        "timestamp": 1700000000,
        "passes": [
            {
                "pass_uuid": f"{user_id:08d}-0000-4000-8000-000000000000",
                "status": "EXPIRED" if terminal else "USABLE",
                "payload": {
                    "expiration": expiration,
                    "first_use": None,
                    "allowed_uses": 1,
                    "vendor_extra": {"zone": "A", "fare": 2.75},
                },
            }
        ],
        "next_check_at": stored_next_check_at(None if terminal else next_check_at),
        "pass_status_checked_at": NOW - timedelta(days=1),
        # Each document's last relay: published, but for those above the watermark.
        "pass_status_outbox": [{"event_id": f"e{user_id}"}],
        "pass_status_outbox_relay": relay_key(SOURCE, user_id),
    }


UNREADABLE: list[Document] = [
    {"user_id": "17", "passes": []},
    {"user_id": None, "passes": []},
    {"passes": []},
    {"user_id": NOW, "passes": []},
]
# A unique index keeps null and missing under one key: one document may lack a number.
UNREADABLE_UNIQUE = [doc for doc in UNREADABLE if "user_id" in doc]


async def _seed(cache: Any, size: int, *, unique_user_id: bool = False) -> float:
    await cache.create_index([("user_id", ASCENDING)], name="user_id_1", unique=unique_user_id)
    await cache.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
    await cache.create_index([("pass_status_outbox_since", ASCENDING)], name="outbox_since_1")
    await cache.create_index([("pass_status_checked_at", ASCENDING)], name="checked_at_1")
    await cache.create_index([("pass_status_outbox_relay", ASCENDING)], name="outbox_relay_1")
    started = time.perf_counter()
    for first in range(1, size + 1, CHUNK):
        last = min(first + CHUNK, size + 1)
        await cache.insert_many([_user(u) for u in range(first, last)], ordered=False)
    checked = {"next_check_at": stored_next_check_at(None), "pass_status_checked_at": NOW}
    unreadable = UNREADABLE_UNIQUE if unique_user_id else UNREADABLE
    await cache.insert_many([{**doc, **checked} for doc in unreadable])
    return time.perf_counter() - started


async def _medians_ms(operations: dict[int, Operation], repeats: int) -> dict[int, float]:
    """Median per size; each repeat runs every size once, in turn."""
    rng = random.Random(11)
    timings: dict[int, list[float]] = {size: [] for size in operations}
    spent = 0.0
    for done in range(repeats):
        if done >= 3 and spent > SECONDS_PER_OPERATION:
            break
        for size, operation in operations.items():
            seconds = await operation(rng)
            timings[size].append(seconds)
            spent += seconds
    return {size: 1000 * statistics.median(t) for size, t in timings.items()}


async def _timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


def _operations(cache: Any, size: int, unreadable_count: int) -> dict[str, Operation]:
    """Each operation returns the seconds its measured call took."""

    async def find_user(rng: random.Random) -> float:
        doc, seconds = await _timed(cache.find_one({"user_id": rng.randint(1, size)}))
        assert doc is not None
        return seconds

    async def find_users(rng: random.Random) -> float:
        ids = rng.sample(range(1, size + 1), 500)
        docs, seconds = await _timed(cache.find({"user_id": {"$in": ids}}).to_list())
        assert len(docs) == 500
        return seconds

    async def conditional_write(rng: random.Random) -> float:
        # The service reads before it writes; only the write is timed here.
        read = await cache.find_one({"user_id": rng.randint(1, size)}, {"passes": 1})
        result, seconds = await _timed(
            cache.update_one(
                {"_id": read["_id"], "passes": read["passes"]}, {"$inc": {"pass_status_rev": 1}}
            )
        )
        assert result.matched_count == 1
        return seconds

    async def due(rng: random.Random) -> float:
        docs, seconds = await _timed(cache.find(due_query(NOW, 0, 1)).to_list())
        assert len(docs) == DUE
        return seconds

    async def unreadable(rng: random.Random) -> float:
        docs, seconds = await _timed(cache.find(unreadable_query()).to_list())
        assert len(docs) == unreadable_count
        return seconds

    async def unpublished(rng: random.Random) -> float:
        # The source published all but its last few relays and two failed ones.
        mark = Watermark(size - UNPUBLISHED, frozenset({1, 2}))
        query = unpublished_query({SOURCE: mark})
        docs, seconds = await _timed(cache.find(query).to_list())
        assert len(docs) == UNPUBLISHED + 2
        return seconds

    async def first_page(rng: random.Random) -> float:
        cursor = cache.find({}).sort("user_id", ASCENDING).limit(FIRST_PAGE)
        docs, seconds = await _timed(cursor.to_list())
        assert len(docs) == FIRST_PAGE
        return seconds

    return {
        "find by user_id": find_user,
        "$in of 500 user ids": find_users,
        "{_id, passes} write": conditional_write,
        "due query": due,
        "unreadable user_ids": unreadable,
        "unpublished outboxes": unpublished,
        "first page by user_id": first_page,
    }


def _table(title: str, costs: dict[int, dict[str, float]], seeding: dict[int, float]) -> str:
    sizes = sorted(costs)
    lines = [
        f"{title} (median ms per operation; ratio to 1,000 documents):",
        f"{'operation':<22}" + "".join(f"{s:>12,}" for s in sizes) + f"{'ratio':>9}",
    ]
    for name in costs[sizes[0]]:
        cells = "".join(f"{costs[s][name]:>12.2f}" for s in sizes)
        ratio = costs[sizes[-1]][name] / costs[sizes[0]][name]
        lines.append(f"{name:<22}{cells}{ratio:>8.1f}x")
    lines.append("seeded in " + ", ".join(f"{seeding[s]:.1f} s ({s:,})" for s in sizes))
    return "\n".join(lines)


@pytest.mark.timeout(1200)
async def test_hot_operations_stay_flat_from_1k_to_100k_documents(
    store_db: AsyncDatabase[Document],
) -> None:
    names = [name for name in REPEATS if name != "first page by user_id"]
    costs, seeding = await _costs(store_db, SIZES, names, unique_user_id=False)

    print("\n" + _table("cost shape", costs, seeding))  # noqa: T201
    assert _too_slow(costs, BOUND) == {}, f"more than {BOUND}x the cost at {SIZES[0]:,} documents"


@pytest.mark.timeout(600)
async def test_lookups_with_a_unique_user_id_index_stay_flat_from_1k_to_20k_documents(
    store_db: AsyncDatabase[Document],
) -> None:
    """The same lookups on a collection whose ``user_id`` index is unique: an index
    lookup (at most twice the cost at 20,000 documents), never a scan (20 times)."""
    costs, seeding = await _costs(store_db, UNIQUE_SIZES, UNIQUE_LOOKUPS, unique_user_id=True)

    print("\n" + _table("lookups with a unique user_id index", costs, seeding))  # noqa: T201
    assert _too_slow(costs, UNIQUE_BOUND) == {}, (
        f"more than {UNIQUE_BOUND}x the cost at {UNIQUE_SIZES[0]:,} documents"
    )


async def _costs(
    store_db: AsyncDatabase[Document],
    sizes: tuple[int, ...],
    names: Sequence[str],
    *,
    unique_user_id: bool,
) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    """Median ms per size and operation, and the seconds each size took to seed."""
    caches = {size: store_db[f"bytemark_tickets_cache_{size}"] for size in sizes}
    seeding = {
        size: await _seed(cache, size, unique_user_id=unique_user_id)
        for size, cache in caches.items()
    }
    count = len(UNREADABLE_UNIQUE if unique_user_id else UNREADABLE)
    operations = {size: _operations(cache, size, count) for size, cache in caches.items()}
    by_name = {
        name: await _medians_ms({s: operations[s][name] for s in sizes}, REPEATS[name])
        for name in names
    }
    return {size: {name: by_name[name][size] for name in names} for size in sizes}, seeding


def _too_slow(costs: dict[int, dict[str, float]], bound: float) -> dict[str, str]:
    sizes = sorted(costs)
    small, large = costs[sizes[0]], costs[sizes[-1]]
    return {
        name: f"{large[name]:.2f} ms at {sizes[-1]:,} vs {small[name]:.2f} ms at {sizes[0]:,}"
        for name in small
        if large[name] > bound * small[name]
    }
