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
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Int64, ObjectId, Timestamp
from consumer.adapters.mongo_sweeps import due_query, unreadable_query
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


async def _users(
    db: AsyncDatabase[Document], n: int, *, unique: bool = False
) -> AsyncCollection[Document]:
    """n user documents shaped like the service's cache, with its four indexes (the
    ``user_id`` one unique if asked: 0008 reads it through a plain index beside it)."""
    coll = db["users"]
    await coll.create_index([("user_id", ASCENDING)], name="user_id_1", unique=unique)
    await coll.create_index([("next_check_at", ASCENDING)], name="next_check_at_1")
    await coll.create_index([("pass_status_outbox_since", ASCENDING)], name="outbox_since_1")
    await coll.create_index([("pass_status_checked_at", ASCENDING)], name="checked_at_1")
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
    "due query as the service sends it": (lambda _d: due_query(T0, 1, 3), "next_check_at_1"),
    "user_ids that are not numbers (0006)": (lambda _d: unreadable_query(), "user_id_1"),
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


# 0008: a unique index on one field is read through the plain index beside it
LOOKUP = "(_lookup)?"


@pytest.mark.parametrize("unique", [False, True], ids=["plain", "unique user_id"])
@pytest.mark.parametrize("shape", QUERY_SHAPES)
async def test_query_plan_uses_the_index(
    db: AsyncDatabase[Document], shape: str, unique: bool
) -> None:
    """SQLite searches the collection's index for each query shape the service sends,
    whether the ``user_id`` index is unique or not."""
    await _require_ferretdb(db)
    coll = await _users(db, 200, unique=unique)
    doc = await coll.find_one({"user_id": 7})
    assert doc is not None
    make_filter, index = QUERY_SHAPES[shape]
    explained: Document = await db.command(
        "explain", {"find": coll.name, "filter": make_filter(doc)}
    )
    plan = " | ".join(explained["queryPlanner"]["Plan"])
    assert explained["filterPushdown"] is True, plan
    assert re.search(rf"SEARCH \S+ USING INDEX \S+_{re.escape(index)}{LOOKUP} ", plan), plan
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
    # 0006: null equality and $type of non-number types (arrays matched by their elements)
    assert await ids({"f": None}) == [6, 7]
    assert await ids({"f": []}) == []
    non_numbers = {"$type": ["string", "object", "bool", "date"]}
    assert await ids({"f": non_numbers}) == sorted([5, 8, 9, 10, 11, 12], key=repr)
    assert await ids({"f": {"$type": "null"}}) == [6]
    assert await ids({"f": {"$gte": 4.5, "$lt": 5.5}}) == [1, 2, 3, 4]
    assert await ids({"_id": 0}) == [0.0]
    assert await ids({"_id": {"$in": [1, 2]}, "f": 5}) == [1, 2]
    # more values than SQLite binds in one statement (32,766): still answered
    assert await ids({"f": {"$in": [*range(100, 40_100), 5]}}) == [1, 2, 3, 4]


# ------------------------------------------------ 0005 sorted finds stream in index order


def _bson_rank_and_value(v: Any) -> tuple[int, Any]:
    """MongoDB's sort order of one non-array value: type rank, then value."""
    if v is None:
        return (1, 0)
    for kinds, rank, value in _BSON_RANKS:
        if isinstance(v, kinds):
            return (rank, value(v))
    raise AssertionError(f"no sort order for {v!r}")


# (python types, MongoDB's rank of the BSON type, comparable value); bool before int
_BSON_RANKS: list[tuple[type | tuple[type, ...], int, Callable[[Any], Any]]] = [
    (bool, 9, lambda v: v),
    ((int, float), 3, Fraction),
    (str, 4, lambda v: v.encode()),  # UTF-8 bytes, as MongoDB compares strings
    (dict, 5, lambda v: tuple((k, _bson_rank_and_value(x)) for k, x in v.items())),
    (bytes, 7, lambda v: (len(v), getattr(v, "subtype", 0), bytes(v))),  # Binary too
    (ObjectId, 8, lambda v: v.binary),
    (datetime, 10, lambda v: v),
    (Timestamp, 11, lambda v: (v.time, v.inc)),
]


def _sort_key(doc: Document, field: str, descending: bool) -> tuple[int, Any]:
    """MongoDB's sort key of doc on field: missing is null; an array sorts by its smallest
    element ascending, its largest descending; an empty array before everything."""
    v = doc.get(field)
    if isinstance(v, list):
        if not v:
            return (0, 0)
        keys = [_bson_rank_and_value(x) for x in v]
        return max(keys) if descending else min(keys)
    return _bson_rank_and_value(v)


def _mongodb_order(
    docs: list[Document], query: Callable[[Document], bool], field: str, descending: bool
) -> list[Any]:
    """_ids of the matching docs in MongoDB's sort order, ties in insertion order."""
    matching = [d for d in docs if query(d)]
    ordered = sorted(matching, key=lambda d: _sort_key(d, field, descending), reverse=descending)
    return [d["_id"] for d in ordered]


MIXED_VALUES: list[Any] = [
    3, Int64(3), 3.0, -1, 0, -0.0, 2.5, 0.1 + 0.2, 0.3, 1e300, -1e300, 5e-324,
    Int64(2**53 + 1), float(2**53), Int64(2**62), 123456789012345678.0, Int64(123456789012345677),
    None, "MISSING", "", "a", "ab", "b", "[x", "{", "z", "é", "a\x00b",
    T0, T0 + timedelta(days=1), True, False, ObjectId("5f0000000000000000000001"),
    ObjectId("5e0000000000000000000001"), {"x": 1}, {"x": 2}, Binary(b"ab"), Timestamp(5, 1),
    [], [3, "a"], [None], ["b"], [7], [2.5, T0], [-5, 10],
]  # fmt: skip


def _mixed_docs() -> list[Document]:
    """Every value twice (ties), with an `_id` giving the insertion order."""
    docs: list[Document] = []
    for round_ in range(2):
        for i, v in enumerate(MIXED_VALUES):
            doc: Document = {"_id": round_ * 1000 + i, "g": i % 3}
            if not (isinstance(v, str) and v == "MISSING"):
                doc["f"] = v
            docs.append(doc)
    return docs


def _gt(bound: Any) -> Callable[[Document], bool]:
    """MongoDB's {f: {$gt: bound}} for a number or string bound (type bracketing)."""
    rank, value = _bson_rank_and_value(bound)

    def match(d: Document) -> bool:
        v = d.get("f")
        for x in v if isinstance(v, list) else [v]:
            if not isinstance(x, bool | list) and x is not None:
                r, y = _bson_rank_and_value(x)
                if r == rank and y > value:
                    return True
        return False

    return match


SORTED_FINDS: dict[str, tuple[Document, Callable[[Document], bool]]] = {
    "no filter": ({}, lambda _d: True),
    "$gt a number": ({"f": {"$gt": 2}}, _gt(2)),
    "$gt a string": ({"f": {"$gt": "a"}}, _gt("a")),
    "another field": ({"g": 1}, lambda d: d["g"] == 1),
}


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("limit", [0, 1, 7])
@pytest.mark.parametrize("shape", SORTED_FINDS)
async def test_sorted_finds_keep_mongodb_order_on_mixed_types(
    db: AsyncDatabase[Document], shape: str, limit: int, descending: bool
) -> None:
    """A sort on an indexed field (pushed down by 0005 when ascending) gives MongoDB's order
    on every BSON type: ints, longs, doubles equal across types, null and missing, strings,
    dates, booleans, ObjectIds, documents, arrays (smallest/largest element), ties in
    insertion order; with a filter, with a limit, across getMore batches."""
    coll = db["mixed"]
    await coll.create_index([("f", ASCENDING)], name="f_1")
    docs = _mixed_docs()
    for doc in docs:  # one by one: insertion order is the order of the rows
        await coll.insert_one(doc)
    query, matches = SORTED_FINDS[shape]
    expected = _mongodb_order(docs, matches, "f", descending)
    if limit:
        expected = expected[:limit]
    cursor = coll.find(query, {"_id": 1}, batch_size=3, limit=limit)
    got = [d["_id"] async for d in cursor.sort("f", -1 if descending else 1)]
    by_id = {d["_id"]: d for d in docs}

    def keys(ids: list[Any]) -> list[tuple[int, Any]]:
        return [_sort_key(by_id[i], "f", descending) for i in ids]

    assert keys(got) == keys(expected)
    assert len(set(got)) == len(got)
    assert set(got) <= set(_mongodb_order(docs, matches, "f", descending))
    if not limit:
        assert set(got) == set(expected)
    if await _is_ferretdb(db):  # MongoDB leaves the order of ties open; FerretDB keeps
        assert got == expected  # insertion order (0005's ordered read, or a stable sort)


@pytest.mark.parametrize("direction", [1, -1], ids=["asc", "desc"])
@pytest.mark.parametrize(
    "query",
    [{}, {"user_id": {"$gt": 150}}],
    ids=["all users", "page after a user_id"],
)
@pytest.mark.parametrize("unique", [False, True], ids=["plain", "unique user_id"])
async def test_query_plan_of_a_sorted_find_uses_the_index(
    db: AsyncDatabase[Document], query: Document, direction: int, unique: bool
) -> None:
    """A find sorted by user_id reads rows in index order: no full scan, no SQL sort; a
    page after a user_id is one index range (also when the index is unique)."""
    await _require_ferretdb(db)
    coll = await _users(db, 200, unique=unique)
    explained: Document = await db.command(
        "explain",
        {"find": coll.name, "filter": query, "sort": {"user_id": direction}, "limit": 100},
    )
    plan = " | ".join(explained["queryPlanner"]["Plan"])
    assert explained["sortPushdown"] is True, plan
    assert re.search(rf"(SEARCH|SCAN) \S+ USING INDEX \S+_user_id_1{LOOKUP}\b", plan), plan
    assert "TEMP B-TREE" not in plan, plan
    if query:
        assert re.search(rf"SEARCH \S+ USING INDEX \S+_user_id_1{LOOKUP} \(", plan), plan
    # the few rows read first: arrays (an index range) ascending, rare types descending
    first = " | ".join(explained["queryPlanner"]["FirstPlan"])
    if direction > 0:
        assert re.search(rf"SEARCH \S+ USING INDEX \S+_user_id_1{LOOKUP} \(", first), first
    else:
        assert re.search(r"USING INDEX \S+_user_id_1_rare_types\b", first), first
    got = [d["user_id"] async for d in coll.find(query).sort("user_id", direction).limit(100)]
    matching = range(query.get("user_id", {}).get("$gt", -1) + 1, 200)
    assert got == sorted(matching, reverse=direction < 0)[:100]


async def test_sorted_find_reads_each_document_once_while_others_write(
    db: AsyncDatabase[Document],
) -> None:
    """A sorted find streams over several batches while other clients rewrite documents
    (not their user_id): every user comes once, in order, none torn."""
    coll = await _users(db, 2000)
    writing = True

    async def writer(seed: int) -> int:
        writes = 0
        while writing:
            user = (writes * 7919 + seed) % 2000
            await coll.update_one({"user_id": user}, {"$inc": {"revision": 1}})
            writes += 1
        return writes

    writers = [asyncio.create_task(writer(seed)) for seed in range(2)]
    try:
        seen = []
        async for doc in coll.find({}).sort("user_id", ASCENDING).batch_size(50):
            assert len(doc["passes"]) == 2, doc
            seen.append(doc["user_id"])
            await asyncio.sleep(0)
    finally:
        writing = False
        writes = sum(await asyncio.gather(*writers))
    assert seen == list(range(2000))
    assert writes > 0


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


async def _median_ms(runs: int, op: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await op()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[runs // 2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_sorted_find_cost_at_10k_100k_documents(
    db: AsyncDatabase[Document], capsys: pytest.CaptureFixture[str]
) -> None:
    """Time to the first batch of ``find({}).sort(user_id)`` (the full check) and to read a
    page of 1,000 after ``{user_id: {$gt: last}}`` sorted (a resumable sweep's page), at
    10k and 100k users (printed; the results are checked)."""
    coll = await _users(db, 0)
    sizes = (10_000, 100_000)
    figures: dict[str, list[float]] = {}
    have = 0
    for size in sizes:
        await _add_users(coll, have, size)
        have = size

        async def first_batch() -> None:
            cursor = coll.find({}).sort("user_id", ASCENDING).batch_size(101)
            try:
                doc = await cursor.next()
                assert doc["user_id"] == 0
            finally:
                await cursor.close()

        async def page(size: int = size) -> None:
            last = size // 2
            query = {"user_id": {"$gt": last}}
            cursor = coll.find(query).sort("user_id", ASCENDING).limit(1000).batch_size(1000)
            got = [d["user_id"] async for d in cursor]
            assert got == list(range(last + 1, last + 1001))

        async def first_batch_descending(size: int = size) -> None:
            cursor = coll.find({}).sort("user_id", -1).batch_size(101)
            try:
                doc = await cursor.next()
                assert doc["user_id"] == size - 1
            finally:
                await cursor.close()

        async def first_batch_in_memory() -> None:  # two sort keys: never pushed down
            cursor = coll.find({}).sort([("user_id", 1), ("_id", 1)]).batch_size(101)
            try:
                doc = await cursor.next()
                assert doc["user_id"] == 0
            finally:
                await cursor.close()

        figures.setdefault("first batch, find({}) sorted", []).append(
            await _median_ms(3, first_batch)
        )
        figures.setdefault("  same, descending", []).append(
            await _median_ms(3, first_batch_descending)
        )
        figures.setdefault("  same, in-memory sort (2 keys)", []).append(
            await _median_ms(1, first_batch_in_memory)
        )
        figures.setdefault("page of 1,000 after $gt, sorted", []).append(await _median_ms(3, page))

    lines = [f"sorted-find ms on {MONGODB_URI} at " + " / ".join(f"{s:,}" for s in sizes)]
    for name, ms in figures.items():
        cells = "  ".join(f"{m:9.1f}" for m in ms)
        lines.append(f"  {name:34} {cells}   100k/10k = {ms[-1] / ms[0]:.1f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))  # noqa: T201 (figures for the report)
