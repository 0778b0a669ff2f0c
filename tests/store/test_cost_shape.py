"""The cost shape of the service's hot operations: at 100,000 documents each costs at most
5 times what it costs at 1,000 (an index lookup is flat in N; a scan is 100 times dearer).

Measured on three collections of 1,000, 10,000 and 100,000 documents, with the indexes
the service creates (``MongoCacheStore.ensure_indexes``):

- ``find_one({user_id})`` (``find_user``: every conflict re-read, ticks for one user);
- ``find({user_id: {$in: 500 ids}})`` (``find_users``: one ticket-used batch);
- ``update_one({_id, passes: <as read>})`` (``write_user``: every write);
- the due query the service sends (``due_query``: ``next_check_at <= t``, or missing, or
  never evaluated), with a fixed number due among users half of whom hold only terminal
  passes, stored as the service stores them (``due_users``: every due tick);
- the query for documents whose ``user_id`` is not a number (``unreadable_query``: every
  full check), with a fixed number of them.

Each repeat runs the operation on the three collections in turn, so that load from other
processes on the machine weighs on every size alike; the medians are compared. The bound
is generous on purpose: it tells an index from a scan, not a fast server from a slow one.
The figures are printed (``pytest -s``). Speed itself is measured in ``bench/``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from consumer.adapters.mongo_sweeps import due_query, unreadable_query
from consumer.domain.user_update import stored_next_check_at
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from tests.store.conftest import Document

SIZES = (1_000, 10_000, 100_000)
BOUND = 5.0
DUE = 10
CHUNK = 2_000
NOW = datetime(2030, 1, 1, tzinfo=UTC)
# Repeats per operation (median taken); a slow operation stops repeating after its budget.
REPEATS = {
    "find by user_id": 31,
    "$in of 500 user ids": 9,
    "{_id, passes} write": 31,
    "due query": 9,
    "unreadable user_ids": 9,
}
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
    }


UNREADABLE: list[Document] = [
    {"user_id": "17", "passes": []},
    {"user_id": None, "passes": []},
    {"passes": []},
    {"user_id": NOW, "passes": []},
]


async def _seed(cache: Any, size: int) -> float:
    await cache.create_index([("user_id", ASCENDING)], name="user_id_1")
    await cache.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
    await cache.create_index([("pass_status_outbox_since", ASCENDING)], name="outbox_since_1")
    await cache.create_index([("pass_status_checked_at", ASCENDING)], name="checked_at_1")
    started = time.perf_counter()
    for first in range(1, size + 1, CHUNK):
        last = min(first + CHUNK, size + 1)
        await cache.insert_many([_user(u) for u in range(first, last)], ordered=False)
    checked = {"next_check_at": stored_next_check_at(None), "pass_status_checked_at": NOW}
    await cache.insert_many([{**doc, **checked} for doc in UNREADABLE])
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


def _operations(cache: Any, size: int) -> dict[str, Operation]:
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
        assert len(docs) == len(UNREADABLE)
        return seconds

    return {
        "find by user_id": find_user,
        "$in of 500 user ids": find_users,
        "{_id, passes} write": conditional_write,
        "due query": due,
        "unreadable user_ids": unreadable,
    }


def _table(costs: dict[int, dict[str, float]], seeding: dict[int, float]) -> str:
    sizes = sorted(costs)
    lines = [
        "cost shape (median ms per operation; ratio to 1,000 documents):",
        f"{'operation':<22}" + "".join(f"{s:>12,}" for s in sizes) + f"{'ratio':>9}",
    ]
    for name in REPEATS:
        cells = "".join(f"{costs[s][name]:>12.2f}" for s in sizes)
        ratio = costs[sizes[-1]][name] / costs[sizes[0]][name]
        lines.append(f"{name:<22}{cells}{ratio:>8.1f}x")
    lines.append("seeded in " + ", ".join(f"{seeding[s]:.1f} s ({s:,})" for s in sizes))
    return "\n".join(lines)


@pytest.mark.timeout(1200)
async def test_hot_operations_stay_flat_from_1k_to_100k_documents(
    store_db: AsyncDatabase[Document],
) -> None:
    caches = {size: store_db[f"bytemark_tickets_cache_{size}"] for size in SIZES}
    seeding = {size: await _seed(cache, size) for size, cache in caches.items()}
    operations = {size: _operations(cache, size) for size, cache in caches.items()}
    by_name = {
        name: await _medians_ms({s: operations[s][name] for s in SIZES}, REPEATS[name])
        for name in REPEATS
    }
    costs = {size: {name: by_name[name][size] for name in REPEATS} for size in SIZES}

    print("\n" + _table(costs, seeding))  # noqa: T201
    small, large = costs[SIZES[0]], costs[SIZES[-1]]
    too_slow = {
        name: f"{large[name]:.2f} ms at {SIZES[-1]:,} vs {small[name]:.2f} ms at {SIZES[0]:,}"
        for name in REPEATS
        if large[name] > BOUND * small[name]
    }
    assert too_slow == {}, f"more than {BOUND}x the cost at {SIZES[0]:,} documents"
