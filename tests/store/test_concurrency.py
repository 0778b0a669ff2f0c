"""What the service's correctness under concurrency rests on: a conditional update is
atomic (of racing writers that read the same state, exactly one applies), and a read never
sees half of a write.

Several replicas, the refresher and the service's own tasks write the same documents; the
write's condition (``passes`` as read) is the only thing that keeps them from undoing each
other's changes (``consumer/adapters/mongo.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from tests.store.conftest import Document, MakeClient

CLIENTS = 4
TRIALS = 500
ISOLATION_SECONDS = 8.0
PASSES_PER_DOCUMENT = 40


async def test_racing_conditional_updates_never_both_apply(
    store_db: AsyncDatabase[Document], store_db_name: str, make_client: MakeClient
) -> None:
    """4 clients (own connections each) race ``update_one({_id, passes: <as read>})`` on
    the same document, 500 times over: exactly one of them matches each time."""
    cache = store_db["bytemark_tickets_cache"]
    read = [{"pass_uuid": "p", "status": "USABLE", "n": 0}]
    ids = [ObjectId() for _ in range(TRIALS)]  # as the refresher's documents have
    await cache.insert_many([{"_id": i, "user_id": t, "passes": read} for t, i in enumerate(ids)])
    writers = [make_client()[store_db_name]["bytemark_tickets_cache"] for _ in range(CLIENTS)]
    for writer in writers:  # connect every client before the race
        await writer.find_one({"_id": ids[0]})

    async def write(writer: Any, trial: int, client: int) -> int:
        change = {"$set": {"passes": [{**read[0], "n": client + 1}]}, "$inc": {"writes": 1}}
        result = await writer.update_one({"_id": ids[trial], "passes": read}, change)
        return int(result.matched_count)

    double_matches = no_match = 0
    for trial in range(TRIALS):
        matched = await asyncio.gather(*(write(w, trial, c) for c, w in enumerate(writers)))
        double_matches += sum(matched) > 1
        no_match += sum(matched) == 0
    applied_twice = await cache.count_documents({"writes": {"$gt": 1}})

    print(  # noqa: T201
        f"\natomicity: {TRIALS} trials x {CLIENTS} racing clients: "
        f"{double_matches} double matches, {applied_twice} documents written twice"
    )
    assert double_matches == 0
    assert applied_twice == 0
    assert no_match == 0


async def test_reads_never_see_half_a_write(
    store_db: AsyncDatabase[Document], store_db_name: str, make_client: MakeClient
) -> None:
    """While one client rewrites a document (every pass and a counter carry the same
    generation in each write), readers on other connections only ever see one generation."""
    cache = store_db["bytemark_tickets_cache"]

    def generation(g: int) -> dict[str, Any]:
        passes = [
            {
                "pass_uuid": f"p-{i}",
                "status": "USABLE",
                "gen": g,
                "payload": {"gen": g, "pad": "x" * 200},
            }
            for i in range(PASSES_PER_DOCUMENT)
        ]
        return {"gen": g, "passes": passes}

    await cache.insert_one({"_id": "u", "user_id": 1, **generation(0)})
    writer = make_client()[store_db_name]["bytemark_tickets_cache"]
    readers = [make_client()[store_db_name]["bytemark_tickets_cache"] for _ in range(3)]
    stop = asyncio.Event()
    writes = reads = 0
    torn: list[set[int]] = []

    async def rewrite() -> None:
        nonlocal writes
        deadline = time.monotonic() + ISOLATION_SECONDS
        while time.monotonic() < deadline:
            writes += 1
            await writer.update_one({"_id": "u"}, {"$set": generation(writes)})
        stop.set()

    async def read(reader: Any) -> None:
        nonlocal reads
        while not stop.is_set():
            doc = await reader.find_one({"_id": "u"})
            reads += 1
            seen = {doc["gen"]} | {p["gen"] for p in doc["passes"]}
            seen |= {p["payload"]["gen"] for p in doc["passes"]}
            if len(seen) != 1 or len(doc["passes"]) != PASSES_PER_DOCUMENT:
                torn.append(seen)

    await asyncio.gather(rewrite(), *(read(r) for r in readers))

    print(f"\nread isolation: {reads} reads during {writes} rewrites, {len(torn)} torn")  # noqa: T201
    assert writes > 10
    assert reads > 10
    assert torn == []
