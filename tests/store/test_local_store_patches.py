"""One test per FerretDB patch (``tools/ferretdb/patches``), against the built server.

They talk to ``PASS_STATUS_MONGODB_URI`` (default: the local store of
``scripts/services up``). Behaviour tests (atomic conditional updates, large update
commands, pushdown results) hold on any MongoDB-compatible server. Query-plan tests read
FerretDB's SQLite ``explain`` output and are skipped, with the reason, on other servers.
The service itself never asks which server answers: only these tests do.

``test_operation_cost_at_1k_10k_100k_documents`` prints per-operation times for the
report (``-s`` not needed); the store-contract suite asserts the 5x bound.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import ASCENDING, AsyncMongoClient, DeleteOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from tests.conftest import REPO, SERVICES_SCRIPT

pytestmark = pytest.mark.integration

Document = dict[str, Any]

MONGODB_URI = os.environ.get("PASS_STATUS_MONGODB_URI", "mongodb://127.0.0.1:27017")
PATCHES = sorted((REPO / "tools" / "ferretdb" / "patches").glob("*.patch"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)

RACE_CLIENTS = 4
RACE_TRIALS = 500
LARGE_COMMAND = 1000  # statements in one update / delete command (FerretDB's pool: 100)
LARGE_COMMAND_BOUND_S = 120.0  # generous on a loaded 2-core machine; a hang never ends


@pytest.fixture
async def client() -> AsyncIterator[AsyncMongoClient[Document]]:
    c: AsyncMongoClient[Document] = AsyncMongoClient(
        MONGODB_URI, serverSelectionTimeoutMS=10_000, tz_aware=True
    )
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def db(client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    name = f"patches_{secrets.token_hex(4)}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)


async def _is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    info: Document = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


async def _require_ferretdb(db: AsyncDatabase[Document]) -> None:
    if not await _is_ferretdb(db):
        pytest.skip("reads FerretDB's SQLite query plan; this server is not FerretDB")


# ------------------------------------------------------- 0002 atomic writes per collection


async def test_racing_conditional_updates_never_both_match(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    """4 clients race ``update_one({_id, v: k}, {$set: {v: k+1}})``: exactly one matches."""
    clients: list[AsyncMongoClient[Document]] = [
        AsyncMongoClient(MONGODB_URI, serverSelectionTimeoutMS=10_000) for _ in range(RACE_CLIENTS)
    ]
    try:
        colls = [c[db.name]["race"] for c in clients]
        await colls[0].insert_one({"_id": "x", "v": 0})
        for coll in colls:  # connect every client before the first trial
            await coll.find_one({"_id": "x"})
        double = 0
        for k in range(RACE_TRIALS):
            results = await asyncio.gather(
                *(co.update_one({"_id": "x", "v": k}, {"$set": {"v": k + 1}}) for co in colls)
            )
            matched = sum(r.matched_count for r in results)
            assert matched >= 1, f"trial {k}: no update matched"
            double += matched > 1
        final = await colls[0].find_one({"_id": "x"})
    finally:
        for c in clients:
            await c.close()
    assert (double, final) == (0, {"_id": "x", "v": RACE_TRIALS}), (
        f"{double} of {RACE_TRIALS} trials matched more than once"
    )


async def test_racing_find_and_modify_and_delete_take_turns(db: AsyncDatabase[Document]) -> None:
    """Racing findAndModify claims and deletes of one document: each succeeds once."""
    coll = db["claims"]
    for trial in range(50):
        await coll.insert_one({"_id": trial, "owner": None})
        claims = await asyncio.gather(
            *(
                coll.find_one_and_update({"_id": trial, "owner": None}, {"$set": {"owner": w}})
                for w in range(RACE_CLIENTS)
            )
        )
        assert sum(c is not None for c in claims) == 1, f"trial {trial}: {claims}"
        deletes = await asyncio.gather(
            *(coll.delete_one({"_id": trial, "owner": {"$ne": None}}) for _ in range(RACE_CLIENTS))
        )
        assert sum(d.deleted_count for d in deletes) == 1, f"trial {trial}"


# --------------------------------------------- 0001 update releases connections per statement


async def test_update_and_delete_commands_of_1000_statements_complete(
    db: AsyncDatabase[Document],
) -> None:
    """One ``update`` (and one ``delete``) command of 1,000 statements ends in bounded time
    and leaves the server answering (unpatched FerretDB 1.24 hangs past 100 statements)."""
    coll = db["bulk"]
    await coll.insert_many([{"_id": i, "n": 0} for i in range(LARGE_COMMAND)])

    updated = await asyncio.wait_for(
        coll.bulk_write(
            [UpdateOne({"_id": i, "n": 0}, {"$set": {"n": 1}}) for i in range(LARGE_COMMAND)]
        ),
        LARGE_COMMAND_BOUND_S,
    )
    assert (updated.matched_count, updated.modified_count) == (LARGE_COMMAND, LARGE_COMMAND)
    assert await coll.count_documents({"n": 1}) == LARGE_COMMAND

    deleted = await asyncio.wait_for(
        coll.bulk_write([DeleteOne({"_id": i, "n": 1}) for i in range(LARGE_COMMAND)]),
        LARGE_COMMAND_BOUND_S,
    )
    assert deleted.deleted_count == LARGE_COMMAND
    assert await db.command("ping") == {"ok": 1.0}


# ------------------------------------------------ 0003 indexes on the expressions queries use
# ------------------------------------------------ 0004 pushdown of the service's query shapes


async def _users(db: AsyncDatabase[Document], n: int) -> AsyncCollection[Document]:
    """n user documents shaped like the service's cache, with its three indexes."""
    coll = db["users"]
    await coll.create_index([("user_id", ASCENDING)], name="user_id_1")
    await coll.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
    await coll.create_index([("pass_status_outbox_since", ASCENDING)], name="outbox_since_1")
    await _add_users(coll, 0, n)
    return coll


async def _add_users(coll: AsyncCollection[Document], start: int, stop: int) -> None:
    batch = 5000
    for first in range(start, stop, batch):
        await coll.insert_many(
            [_user(i) for i in range(first, min(first + batch, stop))], ordered=False
        )


DUE = 10  # users due at T0 (next_check_at before it), whatever the collection's size


def _user(i: int) -> Document:
    due = T0 - timedelta(hours=1) if i < DUE else T0 + timedelta(days=1, seconds=i)
    return {
        "_id": ObjectId(),
        "user_id": i,
        "next_check_at": due,
        "passes": [
            {"pass_uuid": f"{i:08d}-a", "status": "ACTIVE", "payload": {"first_use": None}},
            {"pass_uuid": f"{i:08d}-b", "status": "EXPIRED", "payload": {"first_use": T0}},
        ],
        "revision": 0,
    }


QUERY_SHAPES: dict[str, tuple[Callable[[Document], Document], str]] = {
    "find by user_id": (lambda d: {"user_id": d["user_id"]}, "user_id_1"),
    "$in of 500 user ids": (lambda _d: {"user_id": {"$in": list(range(500))}}, "user_id_1"),
    "due range with $exists false": (
        lambda _d: {
            "$or": [{"next_check_at": {"$lte": T0}}, {"next_check_at": {"$exists": False}}]
        },
        "next_check_at_1",
    ),
    "due range sharded by $mod": (
        lambda _d: {"next_check_at": {"$lte": T0}, "user_id": {"$mod": [3, 1]}},
        "next_check_at_1",
    ),
    "outbox marker range": (lambda _d: {"pass_status_outbox_since": {"$gt": T0}}, "outbox_since_1"),
    "{_id, passes} conditional write": (
        lambda d: {"_id": d["_id"], "passes": d["passes"]},
        "_id_",
    ),
}


@pytest.mark.parametrize("shape", QUERY_SHAPES)
async def test_query_plan_uses_the_index(db: AsyncDatabase[Document], shape: str) -> None:
    """SQLite searches the collection's index for each query shape the service sends."""
    await _require_ferretdb(db)
    coll = await _users(db, 200)
    doc = await coll.find_one({"user_id": 7})
    assert doc is not None
    make_filter, index = QUERY_SHAPES[shape]
    explained: Document = await db.command(
        "explain", {"find": coll.name, "filter": make_filter(doc)}
    )
    plan = " | ".join(explained["queryPlanner"]["Plan"])
    assert explained["filterPushdown"] is True, plan
    assert re.search(rf"SEARCH \S+ USING INDEX \S+_{re.escape(index)} ", plan), plan
    assert " SCAN " not in f" {plan} ", plan


async def test_pushed_down_filters_still_match_like_mongodb(db: AsyncDatabase[Document]) -> None:
    """Pushdown narrows the rows read, never the result: arrays holding the value, numbers
    equal across types, and BSON type bracketing of dates (null and missing excluded)."""
    coll = db["edge"]
    await coll.create_index([("f", ASCENDING)], name="f_1")
    docs: list[Document] = [
        {"_id": 1, "f": 5},
        {"_id": 2, "f": Int64(5)},
        {"_id": 3, "f": 5.0},
        {"_id": 4, "f": [4, 5]},
        {"_id": 5, "f": "5"},
        {"_id": 6, "f": None},
        {"_id": 7},
        {"_id": 8, "f": T0},
        {"_id": 9, "f": [T0 + timedelta(days=1), T0 - timedelta(days=1)]},
        {"_id": 10, "f": T0 + timedelta(days=1)},
        {"_id": 11, "f": True},
        {"_id": 12, "f": {"x": 5}},
        {"_id": 0.0, "f": -1},
    ]
    await coll.insert_many(docs)

    async def ids(query: Document) -> list[Any]:
        return sorted([d["_id"] async for d in coll.find(query, {"_id": 1})], key=repr)

    assert await ids({"f": 5}) == [1, 2, 3, 4]
    assert await ids({"f": {"$in": [5, "5"]}}) == [1, 2, 3, 4, 5]
    assert await ids({"f": {"$lte": T0}}) == [8, 9]
    assert await ids({"f": {"$gt": T0}}) == [10, 9]
    assert await ids({"f": {"$exists": False}}) == [7]
    assert await ids({"$or": [{"f": {"$lte": T0}}, {"f": {"$exists": False}}]}) == [7, 8, 9]
    assert await ids({"f": {"$gte": 4.5, "$lt": 5.5}}) == [1, 2, 3, 4]
    assert await ids({"_id": 0}) == [0.0]
    assert await ids({"_id": {"$in": [1, 2]}, "f": 5}) == [1, 2]
    # more values than SQLite binds in one statement (32,766): still answered
    assert await ids({"f": {"$in": [*range(100, 40_100), 5]}}) == [1, 2, 3, 4]


# ------------------------------------------------------------ the patch set and its build


def test_services_prints_the_ferretdb_version_and_patch_names() -> None:
    """``scripts/services ferretdb`` names the version from tools/go.mod and every patch."""
    if not PATCHES:
        pytest.fail("tools/ferretdb/patches holds no patch")
    done = subprocess.run(
        [str(SERVICES_SCRIPT), "ferretdb"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    go_mod = (REPO / "tools" / "go.mod").read_text()
    version = re.search(r"github\.com/FerretDB/FerretDB (v\S+)", go_mod)
    assert version is not None
    info = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert info["version"] == version[1]
    assert info["patches"] == ", ".join(p.stem for p in PATCHES)
    assert Path(info["binary"]).is_file()


def test_a_patch_that_does_not_apply_stops_the_build(tmp_path: Path) -> None:
    """A patch set that no longer applies fails loudly, naming the patch; nothing starts."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        pytest.skip("needs the Go toolchain (it reads the module source from the Go proxy)")
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts")
    shutil.copytree(REPO / "tools", repo / "tools")
    broken = repo / "tools" / "ferretdb" / "patches" / "9999-broken.patch"
    broken.write_text(
        "Does not apply: the context is not in FerretDB.\n\n"
        "--- a/internal/handler/msg_ping.go\n+++ b/internal/handler/msg_ping.go\n"
        "@@ -1,3 +1,3 @@\n-no such line\n+replacement\n context\n context\n"
    )
    env = {**os.environ, "PASS_STATUS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [str(repo / "scripts" / "services"), "ferretdb"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert "9999-broken.patch does not apply to FerretDB" in done.stderr
    assert not list((tmp_path / "cache").glob("ferretdb/*/ferretdb"))


# ----------------------------------------------------------------- figures for the report


async def _timed(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Mean milliseconds of op(i) over n calls (after a few warm-up calls)."""
    for i in range(3):
        await op(n + i)
    started = time.perf_counter()
    for i in range(n):
        await op(i)
    return (time.perf_counter() - started) * 1000 / n


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_operation_cost_at_1k_10k_100k_documents(
    db: AsyncDatabase[Document], capsys: pytest.CaptureFixture[str]
) -> None:
    """Per-operation time of the service's four hot operations at 1k, 10k and 100k users
    (printed; the results are checked, the 5x bound is the contract suite's)."""
    coll = await _users(db, 0)
    figures: dict[str, list[float]] = {}
    sizes = (1_000, 10_000, 100_000)
    have = 0
    for size in sizes:
        await _add_users(coll, have, size)
        have = size

        async def by_user_id(i: int, size: int = size) -> None:
            doc = await coll.find_one({"user_id": (i * 7919) % size})
            assert doc is not None
            assert doc["user_id"] == (i * 7919) % size

        async def in_500(i: int, size: int = size) -> None:
            wanted = [(i * 500 + j * 37) % size for j in range(500)]
            found = [d["user_id"] async for d in coll.find({"user_id": {"$in": wanted}})]
            assert sorted(found) == sorted(set(wanted))

        async def conditional_write(i: int, size: int = size) -> None:
            doc = await coll.find_one({"user_id": (i * 104729) % size})
            assert doc is not None
            res = await coll.update_one(
                {"_id": doc["_id"], "passes": doc["passes"]}, {"$inc": {"revision": 1}}
            )
            assert res.matched_count == 1

        async def due_range(i: int) -> None:
            due = [d["user_id"] async for d in coll.find({"next_check_at": {"$lte": T0}})]
            assert sorted(due) == list(range(DUE))

        for name, n, op in (
            ("find by user_id", 50, by_user_id),
            ("$in of 500 user ids", 5, in_500),
            ("{_id, passes} update", 50, conditional_write),
            (f"next_check_at <= t ({DUE} due)", 20, due_range),
        ):
            figures.setdefault(name, []).append(await _timed(n, op))

    lines = [f"per-operation ms on {MONGODB_URI} at " + " / ".join(f"{s:,}" for s in sizes)]
    for name, ms in figures.items():
        ratio = ms[-1] / ms[0] if ms[0] else float("inf")
        cells = "  ".join(f"{m:9.2f}" for m in ms)
        lines.append(f"  {name:32} {cells}   100k/1k = {ratio:.1f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))  # noqa: T201 (figures for the report)
