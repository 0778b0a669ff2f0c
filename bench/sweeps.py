"""Sweep benchmark: the cost of a ``due`` tick and of a ``full`` apply check against users.

For each size N: seed N users (3 passes each; every 100th user is due: one pass expired and
``next_check_at`` in the past; the others have ``next_check_at`` 30 days ahead), then, each
sweep in a fresh process (``bench.sweep_once``; peak RSS from ``os.wait4``):

1. ``due`` (apply): reads the 1 % due users;
2. the due users are restored, then ``full`` (apply): reads every user, fixes the same 1 %;
3. only the first 100 due users are restored, then ``due`` again: a fixed number due, which
   isolates the cost that grows with N (the index range scan) from the work per due user.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.common import (
    REPO,
    Endpoints,
    Names,
    a_user,
    create_topics,
    delete_topics,
    drop_database,
    mongo_client,
    python_module,
    seed_users,
    unique_prefix,
)

COLLECTION = "bytemark_tickets_cache"
DUE_EVERY = 100
FIXED_DUE = 100


def _run_sweep(mode: str, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            python_module("bench.sweep_once", mode),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        if proc.stdout is None:
            raise RuntimeError("no stdout pipe")
        out = proc.stdout.read()  # until the child exits; it is reaped below, by wait4
        proc.stdout.close()
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        err = errors.read()
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {mode} exited {proc.returncode}: {err.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def _try_sweep(mode: str, env: dict[str, str]) -> dict[str, Any]:
    """A sweep's figures, or NaN figures and the error when the sweep failed."""
    try:
        return _run_sweep(mode, env)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1][:300]
        nan = float("nan")
        return {
            "error": reason,
            "seconds": nan,
            "documents_read": None,
            "documents_changed": None,
            "transitions": None,
            "peak_rss_mb": nan,
        }


async def _restore_due(uri: str, database: str, users: int, limit: int | None) -> int:
    due_ids = list(range(DUE_EVERY, users + 1, DUE_EVERY))[:limit]
    client = mongo_client(uri)
    coll = client[database][COLLECTION]
    now = datetime.now(UTC)
    try:
        await coll.delete_many({"user_id": {"$in": due_ids}})
        for i in range(0, len(due_ids), 1000):
            await coll.insert_many([a_user(u, now, due=True) for u in due_ids[i : i + 1000]])
    finally:
        await client.close()
    return len(due_ids)


async def run_size(ep: Endpoints, users: int, say: Any = print) -> dict[str, Any]:
    names = Names.of(unique_prefix("sweep"))
    env = names.env(ep)
    await create_topics(ep.bootstrap, [names.status_changed, names.check_log], 1)
    try:
        seed_seconds = await seed_users(
            ep.mongodb_uri, names.prefix, COLLECTION, users, due_every=DUE_EVERY
        )
        say(f"  seeded {users} users in {seed_seconds:.1f}s ({users / seed_seconds:.0f}/s)")
        due = await asyncio.to_thread(_try_sweep, "due", env)
        say(f"  {users:>8} due   {due}")
        await _restore_due(ep.mongodb_uri, names.prefix, users, None)
        full = await asyncio.to_thread(_try_sweep, "full", env)
        say(f"  {users:>8} full  {full}")
        await _restore_due(ep.mongodb_uri, names.prefix, users, FIXED_DUE)
        fixed = await asyncio.to_thread(_try_sweep, "due", env)
        say(f"  {users:>8} due ({FIXED_DUE} due) {fixed}")
    finally:
        await drop_database(ep.mongodb_uri, names.prefix)
        await delete_topics(ep.bootstrap, [names.status_changed, names.check_log])
    return {
        "users": users,
        "seed_seconds": round(seed_seconds, 2),
        "due": due,
        "full": full,
        "due_fixed": fixed,
        "full_over_due": round(full["seconds"] / due["seconds"], 1) if due["seconds"] else None,
    }


async def run(ep: Endpoints, sizes: Sequence[int], say: Any = print) -> list[dict[str, Any]]:
    return [await run_size(ep, n, say) for n in sizes]
