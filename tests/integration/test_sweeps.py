"""Sweeps and their check-logs, driven in-process against the real Kafka and MongoDB.

The service is built by the composition root (``app.core``) from the test's settings, so
these tests run the production sweeper, tick handler and check-log sink, without waiting
for a consumer process to join its group.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from consumer import app
from consumer.adapters.kafka import OutRecord, Publisher
from consumer.domain.checklog import UserLog
from consumer.domain.events import Cause, CauseType, Tick, TickMode
from consumer.domain.times import format_instant
from consumer.domain.user_update import NEVER_DUE
from consumer.errors import BrokerUnavailableError, StoreUnavailableError, WriteConflictError
from consumer.service.checklog import IntervalSummary
from consumer.service.deadletter import InputRecord
from consumer.service.ticks import TickHandler
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user
from tests.integration.harness import ServiceEnv, read_topic, values

pytestmark = pytest.mark.integration
Collection = AsyncCollection[dict[str, Any]]


@pytest.fixture
async def core(service_env: ServiceEnv) -> AsyncIterator[app.Core]:
    async with app.core(service_env.settings) as c:
        await c.store.ensure_indexes()
        await c.producer.start()
        yield c


def _handler(c: app.Core) -> TickHandler:
    return TickHandler(
        c.sweeper,
        c.publisher,
        c.metrics,
        group_id=c.settings.group_id,
        dead_letter_topic=c.settings.topic_dead_letter,
        max_message_bytes=c.settings.max_message_bytes,
        max_future=timedelta(minutes=5),
    )


def _record(c: app.Core, body: dict[str, Any]) -> InputRecord:
    return InputRecord(c.settings.topic_tick, 0, 7, b"0", orjson.dumps(body), None)


def _tick(mode: TickMode, at: datetime, **fields: Any) -> Tick:
    base: dict[str, Any] = {"user_id": None, "apply": True, "shard": 0, "shards": 1}
    return Tick(str(uuid.uuid4()), at, mode=mode, **{**base, **fields})


def _evaluated(user_id: int, passes: list[dict[str, Any]], next_check_at: Any) -> dict[str, Any]:
    return a_user(
        user_id,
        passes,
        next_check_at=next_check_at,
        pass_status_checked_at=datetime.now(UTC) - timedelta(hours=1),
    )


# -- 14.2: due sweeps read only what is due --------------------------------------------


async def test_a_due_sweep_reads_the_due_users_not_the_all_terminal_ones(
    core: app.Core, cache: Collection
) -> None:
    now = datetime.now(UTC)
    terminal = [a_pass("EXPIRED", timedelta(days=-1), now=now)]
    await cache.insert_many(
        [_evaluated(100_000 + i, terminal, NEVER_DUE) for i in range(10_000)], ordered=False
    )
    due = [
        _evaluated(
            i, [a_pass("USABLE", timedelta(minutes=-1), now=now)], now - timedelta(minutes=1)
        )
        for i in range(1, 9)
    ]
    # Written by the refresher, which unsets next_check_at: due whatever its passes.
    due.append(
        a_user(9, [a_pass("USABLE", timedelta(minutes=-1), now=now)], pass_status_checked_at=now)
    )
    # Never evaluated by this service (found by the marker, whatever next_check_at holds).
    due.append(a_user(10, [a_pass("USABLE", timedelta(minutes=-1), now=now)], next_check_at=None))
    await cache.insert_many(due)

    cause = Cause(CauseType.TICK, "t1")
    result = await core.sweeper.due(now, 0, 1, True, cause)
    assert result.documents_read == 10
    assert result.transitions == 10
    again = await core.sweeper.due(now, 0, 1, True, cause)
    assert again.documents_read == 0


async def test_shards_of_a_due_sweep_read_disjoint_due_users(
    core: app.Core, cache: Collection
) -> None:
    now = datetime.now(UTC)
    await cache.insert_many(
        [
            _evaluated(i, [a_pass("USABLE", timedelta(minutes=-1), now=now)], now - timedelta(1))
            for i in range(1, 13)
        ]
    )
    cause = Cause(CauseType.TICK, "t1")
    reads = [(await core.sweeper.due(now, s, 3, True, cause)).documents_read for s in range(3)]
    assert reads == [4, 4, 4]


# -- 12.5: tick fields ---------------------------------------------------------------


async def test_a_due_tick_for_one_user_sweeps_only_that_user(
    core: app.Core, cache: Collection
) -> None:
    now = datetime.now(UTC)
    expired = timedelta(minutes=-1)
    await cache.insert_many(
        [
            _evaluated(u, [a_pass("USING", expired, "x", now=now)], now - timedelta(1))
            for u in (4, 5, 6)
        ]
    )
    result = await _handler(core).run(_tick(TickMode.DUE, now, user_id=5))
    assert (result.documents_read, result.transitions) == (1, 1)
    statuses = {d["user_id"]: d["passes"][0]["status"] async for d in cache.find({})}
    assert statuses == {4: "USING", 5: "EXPIRED", 6: "USING"}


async def test_a_full_tick_honours_its_shard(
    core: app.Core, cache: Collection, check_logs: Collection
) -> None:
    now = datetime.now(UTC)
    await cache.insert_many(
        [a_user(u, [a_pass("USABLE", timedelta(minutes=-1), now=now)]) for u in range(1, 10)]
    )
    result = await _handler(core).run(_tick(TickMode.FULL, now, shard=1, shards=3))
    assert result.documents_read == 3
    [document] = [d async for d in check_logs.find({})]
    assert [e["user_id"] for e in document["log"]] == [1, 4, 7]


async def test_a_tick_for_an_unknown_user_only_dead_letters(
    core: app.Core, check_logs: Collection
) -> None:
    body = {"event_id": "e1", "tick_at": format_instant(datetime.now(UTC)), "mode": "full"}
    assert await _handler(core).handle(_record(core, {**body, "user_id": 77})) is None
    assert [d async for d in check_logs.find({})] == []
    settings = core.settings
    [letter] = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_dead_letter, expect=1)
    )
    assert letter["reason"] == "unknown_user"


async def test_an_unexpected_error_in_a_tick_is_dead_lettered_and_counted(
    core: app.Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(core.sweeper, "due", broken)
    body = {"event_id": "e1", "tick_at": format_instant(datetime.now(UTC)), "mode": "due"}
    assert await _handler(core).handle(_record(core, body)) is None
    settings = core.settings
    [letter] = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_dead_letter, expect=1)
    )
    assert letter["reason"] == "internal_error"
    assert "ZeroDivisionError('a bug')" in letter["message"]
    assert core.metrics.dead_letters.labels("internal_error")._value.get() == 1


# -- 12.6: documents the sweep cannot read -------------------------------------------


async def test_bad_user_ids_are_reported_and_marked_evaluated_and_doubles_accepted(
    core: app.Core, cache: Collection, check_logs: Collection
) -> None:
    now = datetime.now(UTC)
    expired = timedelta(minutes=-1)
    await cache.insert_many(
        [
            a_user(1, [a_pass("USABLE", expired, now=now)]) | {"user_id": "abc"},
            a_user(2, [a_pass("USABLE", expired, now=now)]) | {"user_id": 2.0},
        ]
    )
    await core.sweeper.full(None, True, now, Cause(CauseType.TICK, "t1"))
    [document] = [d async for d in check_logs.find({})]
    by_user = {e["user_id"]: e for e in document["log"]}
    assert by_user[2]["invalid_list"][0]["status_log"] == "USABLE -> EXPIRED"
    [bad] = by_user[0]["skipped_list"]
    assert bad["pass_uuid"] is None
    assert "user_id is not an integer: 'abc'" in bad["reason"]
    # Marked evaluated: a due sweep no longer takes it for a never-evaluated document.
    result = await core.sweeper.due(
        now + timedelta(seconds=1), 0, 1, True, Cause(CauseType.TICK, "t2")
    )
    assert result.documents_read == 0


# -- 12.4: check-log duplicates ------------------------------------------------------


class _FailingOnce:
    """The real publisher, but the first check-log publish fails as a broker outage."""

    def __init__(self, inner: Publisher, topic: str) -> None:
        self._inner = inner
        self._topic = topic
        self.failed = False

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if not self.failed and any(r.topic == self._topic for r in records):
            self.failed = True
            raise BrokerUnavailableError("injected: broker down")
        await self._inner.publish(records)


async def test_an_interval_summary_retried_after_a_kafka_failure_is_stored_once(
    core: app.Core, check_logs: Collection
) -> None:
    settings = core.settings
    failing = _FailingOnce(core.publisher, settings.topic_check_log)
    core.sink._publisher = failing  # the sink under test, its publisher failing once
    summary = IntervalSummary()
    summary.add(UserLog(5, (("p", "USABLE -> USING"),), ()))
    with pytest.raises(BrokerUnavailableError):
        await summary.flush(core.sink)
    summary.add(UserLog(6, (("q", "USING -> EXPIRED"),), ()))
    await summary.flush(core.sink)
    documents = [d async for d in check_logs.find({}).sort("_id", 1)]
    assert [[e["user_id"] for e in d["log"]] for d in documents] == [[5], [6]]
    published = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_check_log, expect=2)
    )
    assert sorted(d["_id"] for d in published) == [d["_id"] for d in documents]


async def test_a_check_log_written_twice_is_stored_once(
    core: app.Core, check_logs: Collection
) -> None:
    document = {
        "_id": 1_700_000_000_000,
        "check_userID": "all users",
        "editMode": True,
        "check_time": "2023-11-14T22:13:20.000Z",
        "log": [{"user_id": 1, "invalid_list": [], "skipped_list": []}],
    }
    assert await core.store.insert_check_log(document) == 1_700_000_000_000
    assert await core.store.insert_check_log(document) == 1_700_000_000_000
    other = {**document, "editMode": False}
    assert await core.store.insert_check_log(other) == 1_700_000_000_001
    assert await check_logs.count_documents({}) == 2


# -- 14.3: sweeps that resume ----------------------------------------------------------


def _expiring_users(count: int, now: datetime) -> list[dict[str, Any]]:
    return [
        a_user(u, [a_pass("USABLE", timedelta(minutes=-1), now=now, pass_uuid=f"pass-{u}")])
        for u in range(1, count + 1)
    ]


async def test_a_full_sweep_stopped_by_a_transient_error_resumes_where_it_was(
    core: app.Core, cache: Collection, check_logs: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    await cache.insert_many(_expiring_users(300, now))
    core.sweeper.checkpoint_users = 50
    update_round = core.writer.update_round
    written: list[int] = []

    async def down_at_user_200(users: Any, *args: Any, **kwargs: Any) -> Any:
        ids = [u.read["user_id"] for u in users]
        if 200 in ids:  # the group of user 200: its bulk fails, as when MongoDB goes down
            raise StoreUnavailableError("injected: MongoDB down")
        outcomes = await update_round(users, *args, **kwargs)
        written.extend(ids)
        return outcomes

    monkeypatch.setattr(core.writer, "update_round", down_at_user_200)
    cause = Cause(CauseType.TICK, "tick-1")
    with pytest.raises(StoreUnavailableError):
        await core.sweeper.full(None, True, now, cause)
    # Users after the last checkpoint (at most user 200, at least 150) were written before
    # the failure: the resumed sweep reads them again with nothing left to change.
    last = max(written)
    assert 150 < last < 200
    assert (await cache.find_one({"user_id": last}) or {})["passes"][0]["status"] == "EXPIRED"
    monkeypatch.setattr(core.writer, "update_round", update_round)
    result = await core.sweeper.full(None, True, now, cause)
    # Resumed after the last checkpoint before user 200 (users are read 16 at a time).
    assert 300 - 200 < result.documents_read <= 300 - 150 + core.settings.user_concurrency
    documents = [d async for d in check_logs.find({})]
    logged = [(e["user_id"], e["invalid_list"]) for d in documents for e in d["log"]]
    # Every user exactly once with its transition, also those written after the last
    # checkpoint and before the failure (re-read on resume with nothing left to change).
    assert sorted(logged, key=lambda e: e[0]) == [
        (u, [{"pass_uuid": f"pass-{u}", "status_log": "USABLE -> EXPIRED"}]) for u in range(1, 301)
    ]
    assert await cache.count_documents({"passes.status": "EXPIRED"}) == 300
    # The same tick delivered again finds its sweep done.
    again = await core.sweeper.full(None, True, now, cause)
    assert again.documents_read == 0
    assert await check_logs.count_documents({}) == len(documents)


async def test_a_finished_sweep_prunes_the_records_of_old_sweeps(
    core: app.Core, cache: Collection
) -> None:
    now = datetime.now(UTC)
    await cache.insert_many(_expiring_users(3, now))
    records = cache.database["pass_status_sweeps"]
    old = now - timedelta(days=8)
    await records.insert_many(
        [
            {"_id": "full:old-tick:0/1", "done_at": old},
            {"_id": "full:recent-tick:0/1", "done_at": now - timedelta(days=1)},
            # a chunk of a sweep whose tick never came back
            {
                "_id": "full:lost-tick:0/1/0000000000",
                "sweep": "full:lost-tick:0/1",
                "seq": 0,
                "batch_end": True,
                "entries": [],
                "saved_at": old,
            },
        ]
    )
    await core.sweeper.full(None, True, now, Cause(CauseType.TICK, "new-tick"))
    kept = sorted([d["_id"] async for d in records.find({})])
    assert kept == ["full:new-tick:0/1", "full:recent-tick:0/1"]


async def test_a_full_sweeps_write_keeps_other_sweeps_records_and_merges_its_own(
    core: app.Core, cache: Collection, check_logs: Collection
) -> None:
    """On the real server: the write's condition holds the record as read (an array of
    documents), and matches it; the record keeps the other sweep's, and merges this
    sweep's earlier transitions (as left by a run stopped after writing the user)."""
    now = datetime.now(UTC)
    expired = timedelta(minutes=-1)

    def record(sweep: str, *uuids: str) -> dict[str, Any]:
        logged = [{"pass_uuid": u, "status_log": "USABLE -> EXPIRED"} for u in uuids]
        return {"sweep": sweep, "invalid_list": logged}

    this, other = "full:tick-3:0/1", "full:tick-0:0/1"
    await cache.insert_many(
        [
            a_user(1, [a_pass("USABLE", expired, now=now, pass_uuid="p1")])
            | {"pass_status_sweep_log": [record(other, "x")]},
            a_user(2, [a_pass("USABLE", expired, now=now, pass_uuid="p2")])
            | {"pass_status_sweep_log": [record(other, "y"), record(this, "earlier")]},
        ]
    )
    await core.sweeper.full(None, True, now, Cause(CauseType.TICK, "tick-3"))

    conflicts = core.metrics.registry.get_sample_value("pass_status_write_conflicts_total")
    assert conflicts == 0
    records = {d["user_id"]: d["pass_status_sweep_log"] async for d in cache.find({})}
    assert records == {
        1: [record(other, "x"), record(this, "p1")],
        2: [record(other, "y"), record(this, "earlier", "p2")],
    }
    [document] = [d async for d in check_logs.find({})]
    assert {e["user_id"]: [i["pass_uuid"] for i in e["invalid_list"]] for e in document["log"]} == {
        1: ["p1"],
        2: ["earlier", "p2"],
    }


async def test_a_user_that_keeps_failing_is_reported_and_the_sweep_goes_on(
    core: app.Core, cache: Collection, check_logs: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    await cache.insert_many(_expiring_users(20, now))
    update_round = core.writer.update_round
    attempts: list[int] = []

    async def user_7_conflicts(users: Any, *args: Any, **kwargs: Any) -> Any:
        # The writer's outcome for user 7: its conflicts never settled; the others written.
        others = [u for u in users if u.read["user_id"] != 7]
        outcomes = iter(await update_round(others, *args, **kwargs))
        attempts.extend(7 for u in users if u.read["user_id"] == 7)
        return [
            WriteConflictError("user 7: document kept changing")
            if u.read["user_id"] == 7
            else next(outcomes)
            for u in users
        ]

    monkeypatch.setattr(core.writer, "update_round", user_7_conflicts)
    result = await core.sweeper.full(None, True, now, Cause(CauseType.TICK, "tick-2"))
    assert result.documents_read == 20
    assert len(attempts) == 1  # the writer re-reads conflicts itself; the sweep does not again
    [document] = [d async for d in check_logs.find({})]
    by_user = {e["user_id"]: e for e in document["log"]}
    assert len(by_user) == 20
    [skipped] = by_user[7]["skipped_list"]
    assert skipped["reason"].startswith("skipped (write_conflict): WriteConflictError")
    assert core.metrics.sweep_users_skipped.labels("full", "write_conflict")._value.get() == 1
    assert by_user[8]["invalid_list"][0]["status_log"] == "USABLE -> EXPIRED"
