"""What one MongoDB operation costs on the configured server, by filter shape and size.

    python -m bench.store_ops --sizes 1000,10000 [--repeat 5]

Seeds N bench users (``bench.common.a_user``, about 2 KB each) into a scratch database and
times, side by side, the operations the service and the baselines make: a read by
``user_id``, a read and a write by ``_id`` alone, the same write with a condition on
``passes`` (the service's conditional write), and a range query on ``next_check_at`` (a
``due`` sweep's query, matching nothing here). On MongoDB each is an index lookup, flat in
N (``tests/store`` checks that shape on any server). Median of ``--repeat`` runs each;
writes JSON with ``--output``.
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

from bench.common import drop_database, endpoints_from_env, mongo_client, seed_users

COLLECTION = "bytemark_tickets_cache"
OPERATIONS = (
    "find_one by user_id",
    "find_one by _id",
    "update_one by _id",
    "update_one by _id + passes (server-side condition)",
    "find next_check_at <= t (no match)",
)


async def _median_ms(op: Callable[[], Awaitable[Any]], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        await op()
        timings.append(time.perf_counter() - started)
    return round(1000 * statistics.median(timings), 2)


async def measure(uri: str, size: int, repeat: int) -> dict[str, Any]:
    """Seed ``size`` users in a scratch database, time each operation, drop it."""
    database = f"bench_store_ops_{size}_{int(time.time())}"
    seed_seconds = await seed_users(uri, database, COLLECTION, size)
    client = mongo_client(uri)
    try:
        cache = client[database][COLLECTION]
        middle = await cache.find_one({"user_id": (size + 1) // 2})
        if middle is None:
            raise RuntimeError(f"seeded user {(size + 1) // 2} is missing from {database}")
        doc_id, passes = middle["_id"], middle["passes"]
        never = datetime(2000, 1, 1, tzinfo=UTC)
        ops: dict[str, Callable[[], Awaitable[Any]]] = {
            OPERATIONS[0]: lambda: cache.find_one({"user_id": middle["user_id"]}),
            OPERATIONS[1]: lambda: cache.find_one({"_id": doc_id}),
            OPERATIONS[2]: lambda: cache.update_one({"_id": doc_id}, {"$inc": {"probe": 1}}),
            OPERATIONS[3]: lambda: cache.update_one(
                {"_id": doc_id, "passes": passes}, {"$inc": {"probe": 1}}
            ),
            OPERATIONS[4]: lambda: cache.find({"next_check_at": {"$lte": never}}).to_list(),
        }
        timings = {name: await _median_ms(op, repeat) for name, op in ops.items()}
    finally:
        await client.close()
        await drop_database(uri, database)
    return {"users": size, "seed_seconds": round(seed_seconds, 2), "median_ms": timings}


async def run(
    uri: str, sizes: Sequence[int], repeat: int, say: Any = print
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        row = await measure(uri, size, repeat)
        say(f"{size:>9,} users (seeded in {row['seed_seconds']} s)")
        for name, ms in row["median_ms"].items():
            say(f"    {ms:>10,.1f} ms  {name}")
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per operation, one column per collection size."""
    head = "| operation | " + " | ".join(f"{r['users']:,} users" for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for name in OPERATIONS:
        cells = " | ".join(f"{r['median_ms'][name]:,.1f} ms" for r in rows)
        lines.append(f"| {name} | {cells} |")
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
