"""Sweep benchmark: the cost of a ``due`` tick and of a ``full`` apply check against users.

For each size N, seed N users in bulk (3 passes each, as the service leaves them: evaluated,
``next_check_at`` = the earliest expiration). Every ``DUE_EVERY``-th user is due (one pass
expired, ``next_check_at`` past); every ``TERMINAL_EVERY``-th of the others holds only
EXPIRED passes (``next_check_at`` never due: nothing can change by time alone, and a due sweep
has no reason to read them). Then, each sweep in a fresh process (``bench.sweep_once``;
its own peak RSS (VmHWM), longest event-loop stall from a monitor task):

1. ``due`` (apply): reads the 1 % due users;
2. only the first ``FIXED_DUE`` due users are restored, then ``due`` again: a fixed number
   due whatever N, which isolates the cost that grows with N (the query) from the work per
   due user. Its growth from the smallest to the largest N is the issue's "grows < 2x";
3. all due users are restored, then ``full`` (apply): reads every user, fixes the same 1 %.
   Last, because a full check that fails by a client timeout may leave the store busy
   with the abandoned query; the next size waits until the store is idle again. Once it
   failed at one size, it is not run at the larger ones (it would only take longer).
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.common import (
    COLLECTION,
    REPO,
    Endpoints,
    Names,
    a_user,
    cpu_seconds,
    create_topics,
    delete_topics,
    drop_database,
    mongo_client,
    python_module,
    seed_users,
    server_pids,
    unique_prefix,
    user_kind,
)

DUE_EVERY = 100
TERMINAL_EVERY = 2
FIXED_DUE = 100
SWEEPS = ("due", "full", "due_fixed")


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
    # the child's own VmHWM (sweep_once); ru_maxrss would include this process's peak
    result.setdefault("peak_rss_mb", round(usage.ru_maxrss / 1024, 1))
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
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


async def wait_store_idle(ep: Endpoints, limit: float = 300.0) -> float:
    """Wait until the local store uses under 10 % of a core for 3 s in a row (or ``limit``
    seconds): a query its client abandoned may still be running. Returns seconds waited."""
    pid = server_pids(ep).get("store")
    started = time.monotonic()
    if pid is None:
        return 0.0
    quiet = 0
    last = cpu_seconds(pid)
    while quiet < 3 and time.monotonic() - started < limit:
        await asyncio.sleep(1)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.1 else 0
        last = now
    return time.monotonic() - started


def due_ids(users: int) -> list[int]:
    return list(range(DUE_EVERY, users + 1, DUE_EVERY))


async def _restore_due(uri: str, database: str, users: int, limit: int | None) -> int:
    """Make the first ``limit`` (default all) seeded due users due again."""
    ids = due_ids(users)[:limit]
    client = mongo_client(uri)
    coll = client[database][COLLECTION]
    now = datetime.now(UTC)
    try:
        for i in range(0, len(ids), 5000):
            chunk = ids[i : i + 5000]
            await coll.delete_many({"user_id": {"$in": chunk}})
            await coll.insert_many([a_user(u, now, due=True) for u in chunk], ordered=False)
    finally:
        await client.close()
    return len(ids)


def _skipped(reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {"error": reason, "skipped": True, "seconds": nan, "peak_rss_mb": nan}


async def run_size(
    ep: Endpoints,
    users: int,
    say: Callable[[str], Any] = print,
    skip_full: str | None = None,
) -> dict[str, Any]:
    """One size; ``skip_full``: do not run the full check, for this reason (it failed at a
    smaller size: on a store that cannot stream it, a larger one only takes longer)."""
    names = Names.of(unique_prefix("sweep"))
    env = names.env(ep)
    await create_topics(ep.bootstrap, [names.status_changed, names.check_log], 1)
    try:
        seeded = await seed_users(
            ep.mongodb_uri,
            names.prefix,
            users,
            due_every=DUE_EVERY,
            terminal_every=TERMINAL_EVERY,
        )
        say(f"  seeded {users:,} users: {seeded.as_dict()}")
        due = await asyncio.to_thread(_try_sweep, "due", env)
        say(f"  {users:>9,} due   {due}")
        await _restore_due(ep.mongodb_uri, names.prefix, users, FIXED_DUE)
        fixed = await asyncio.to_thread(_try_sweep, "due", env)
        say(f"  {users:>9,} due ({FIXED_DUE} due) {fixed}")
        # The full check last: when it fails (a client timeout), the store may still be
        # working on the abandoned query, and nothing else of this size is measured then.
        if skip_full is None:
            await _restore_due(ep.mongodb_uri, names.prefix, users, None)
            full = await asyncio.to_thread(_try_sweep, "full", env)
            if "error" in full:
                waited = await wait_store_idle(ep)
                say(f"  store idle again after {waited:.0f} s")
        else:
            full = _skipped(skip_full)
        say(f"  {users:>9,} full  {full}")
    finally:
        await drop_database(ep.mongodb_uri, names.prefix)
        await delete_topics(ep.bootstrap, [names.status_changed, names.check_log])
    return {
        "users": users,
        "due_users": len(due_ids(users)),
        "fixed_due_users": min(FIXED_DUE, len(due_ids(users))),
        "terminal_users": sum(
            user_kind(u, DUE_EVERY, TERMINAL_EVERY)[1] for u in range(1, users + 1)
        ),
        "seed": seeded.as_dict(),
        "seed_seconds": round(seeded.seconds, 2),
        "due": due,
        "full": full,
        "due_fixed": fixed,
        "full_over_due": _ratio(full["seconds"], due["seconds"]),
        "full_over_due_fixed": _ratio(full["seconds"], fixed["seconds"]),
    }


def _ratio(a: float, b: float) -> float | None:
    if not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 1)


async def run(
    ep: Endpoints,
    sizes: Sequence[int],
    say: Callable[[str], Any] = print,
    done: Sequence[dict[str, Any]] = (),
    save: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every size in order; sizes already in ``done`` are kept, not re-measured (resume).
    ``save`` is called with the rows so far after each size."""
    rows = {r["users"]: r for r in done}
    skip_full: str | None = None
    for n in sizes:
        if n in rows:
            say(f"  {n:,} users: kept from the previous run")
        else:
            rows[n] = await run_size(ep, n, say, skip_full)
            if save is not None:
                save([rows[s] for s in sizes if s in rows])
        full = rows[n]["full"]
        if skip_full is None and "error" in full and not full.get("skipped"):
            skip_full = f"not run: the full check failed at {n:,} users ({full['error'][:120]})"
    return [rows[s] for s in sizes]
