"""What one MongoDB operation costs on the configured server, by filter shape and size.

    python -m bench.store_ops --sizes 1000,10000 [--repeat 5]

Seeds N bench users (``bench.common.a_user``, about 2 KB each, in bulk, with the service's
indexes) into a scratch database and times the operations the service and the baselines
make: a read by ``user_id``, a read of 500 users by ``$in`` (one batch of the consumer), the
service's conditional write (``_id`` and the exact ``passes`` in the filter), the same write
by ``_id`` alone (naive's), and a due sweep's range query on ``next_check_at`` (matching
nothing); then, through the checked-out service's own store adapter, its due query (the
collection is seeded with 1 % of users due and half of the others all-terminal, as
``bench.sweeps`` does) and the first document of its full-check read (sorted by
``user_id``). On MongoDB each is an index lookup or walk, flat in N; the ratio between
sizes shows whether the configured server uses its indexes. Median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from consumer.app import core
from consumer.domain.user_update import CHECKED_AT
from consumer.errors import StoreUnavailableError
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from bench.common import (
    COLLECTION,
    Endpoints,
    cpu_seconds,
    drop_database,
    endpoints_from_env,
    mongo_client,
    seed_users,
    server_pids,
    service_settings,
)

IN_BATCH = 500
OPERATIONS = (
    "find_one by user_id",
    f"find user_id $in {IN_BATCH} ids",
    "update_one by _id + passes (the service's conditional write)",
    "update_one by _id (naive's write)",
    "find next_check_at <= t (no match)",
    "the service's due query, every due user (1 %)",
    "the service's full-check read, first document",
)
DUE_EVERY, TERMINAL_EVERY = 100, 2  # as bench.sweeps seeds: 1 % due, half all-terminal


async def _median_ms(op: Callable[[], Awaitable[Any]], repeat: int) -> float | None:
    """Median milliseconds of ``repeat`` runs; None if the operation fails (for example
    past the service's socket timeout), which is itself the figure."""
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            await op()
        except (PyMongoError, StoreUnavailableError):
            return None
        timings.append(time.perf_counter() - started)
    return round(1000 * statistics.median(timings), 2)


async def measure(uri: str, size: int, repeat: int) -> dict[str, Any]:
    """Seed ``size`` users in a scratch database, time each operation, drop it."""
    database = f"bench_store_ops_{size}_{int(time.time())}"
    client = mongo_client(uri)
    try:
        seeded = await seed_users(
            uri, database, size, due_every=DUE_EVERY, terminal_every=TERMINAL_EVERY
        )
        cache = client[database][COLLECTION]
        middle = await cache.find_one({"user_id": (size + 1) // 2})
        if middle is None:
            raise RuntimeError(f"seeded user {(size + 1) // 2} is missing from {database}")
        doc_id, passes = middle["_id"], middle["passes"]
        step = max(1, size // IN_BATCH)
        some = list(range(1, size + 1, step))[:IN_BATCH]
        never = datetime(2000, 1, 1, tzinfo=UTC)
        ops: dict[str, Callable[[], Awaitable[Any]]] = {
            OPERATIONS[0]: lambda: cache.find_one({"user_id": middle["user_id"]}),
            OPERATIONS[1]: lambda: cache.find({"user_id": {"$in": some}}).to_list(),
            OPERATIONS[2]: lambda: cache.update_one(
                {"_id": doc_id, "passes": passes}, {"$inc": {"probe": 1}}
            ),
            OPERATIONS[3]: lambda: cache.update_one({"_id": doc_id}, {"$inc": {"probe": 1}}),
            OPERATIONS[4]: lambda: cache.find({"next_check_at": {"$lte": never}}).to_list(),
        }
        async with core(service_settings(uri, database)) as c:
            store = c.store
            now = datetime.now(UTC)

            async def due_query() -> int:
                return len([d async for d in store.due_users(now, 0, 1)])

            async def first_of_full_check() -> None:
                users = store.all_users(None)
                try:
                    await anext(users)
                finally:
                    close = getattr(users, "aclose", None)  # an async generator: its cursor
                    if close is not None:
                        await close()

            ops[OPERATIONS[5]] = due_query
            ops[OPERATIONS[6]] = first_of_full_check
            timings = {name: await _median_ms(op, repeat) for name, op in ops.items()}
    finally:
        await client.close()
        await drop_database(uri, database)
    return {
        "users": size,
        "seed": seeded.as_dict(),
        "seed_seconds": round(seeded.seconds, 2),
        "median_ms": timings,
    }


async def per_document(
    ep: Endpoints, database: str, user_ids: Sequence[int], batch: int = IN_BATCH
) -> dict[str, Any]:
    """What the store spends per document on the least a batch of users needs: one read of
    ``batch`` users by ``$in`` and one unordered bulk of their conditional writes (by
    ``_id`` and the ``passes`` read, as the service writes), ``batch`` at a time, over
    ``user_ids`` of ``database`` (the documents a drain just wrote). Wall milliseconds and,
    when the store runs on this machine, its CPU milliseconds (``/proc``) per document."""
    client = mongo_client(ep.mongodb_uri)
    cache = client[database][COLLECTION]
    store = server_pids(ep).get("store")
    spent = {"read": [0.0, 0.0], "write": [0.0, 0.0]}  # [wall s, store CPU s]
    documents = 0

    async def timed(kind: str, op: Awaitable[Any]) -> Any:
        cpu, wall = cpu_seconds(store or 0), time.perf_counter()
        result = await op
        spent[kind][0] += time.perf_counter() - wall
        spent[kind][1] += cpu_seconds(store or 0) - cpu
        return result

    try:
        for first in range(0, len(user_ids), batch):
            ids = list(user_ids[first : first + batch])
            docs = await timed("read", cache.find({"user_id": {"$in": ids}}).to_list())
            now = datetime.now(UTC)
            writes = [
                UpdateOne({"_id": d["_id"], "passes": d["passes"]}, {"$set": {CHECKED_AT: now}})
                for d in docs
            ]
            if writes:
                await timed("write", cache.bulk_write(writes, ordered=False))
            documents += len(docs)
    finally:
        await client.close()
    out: dict[str, Any] = {"documents": documents, "batch": batch}
    for kind, (wall, cpu) in spent.items():
        out[f"{kind}_ms_per_document"] = round(1000 * wall / max(1, documents), 3)
        out[f"{kind}_store_cpu_ms_per_document"] = (
            round(1000 * cpu / max(1, documents), 3) if store else None
        )
    return out


async def run(
    uri: str, sizes: Sequence[int], repeat: int, say: Callable[[str], Any] = print
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        row = await measure(uri, size, repeat)
        say(f"{size:>9,} users (seeded in {row['seed_seconds']} s)")
        for name, ms in row["median_ms"].items():
            say(f"    {'failed' if ms is None else f'{ms:,.1f} ms':>13}  {name}")
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per operation, one column per collection size, then the ratio of
    the largest size to the smallest (1 when the operation is an index lookup)."""
    head = "| operation | " + " | ".join(f"{r['users']:,} users" for r in rows)
    lines = [head + " | largest / smallest |", "|---|" + "---:|" * (len(rows) + 1)]
    for name in OPERATIONS:
        values = [r["median_ms"].get(name) for r in rows]
        cells = " | ".join("failed or n/a" if v is None else f"{v:,.1f} ms" for v in values)
        first, last = values[0], values[-1]
        ratio = f"{last / first:,.1f}x" if first and last else "n/a"
        lines.append(f"| {name} | {cells} | {ratio} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_ops", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = asyncio.run(run(endpoints_from_env().mongodb_uri, sizes, args.repeat))
    print(table(rows))
    if args.output:
        args.output.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
