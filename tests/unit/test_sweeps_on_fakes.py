"""Resumable full sweeps on the fakes: the check-log of a resumed sweep lists every
transition that sweep made, exactly once, wherever it was interrupted (issue 14, item 3).

A full sweep checkpoints every ``checkpoint_users`` users. A user written after the last
checkpoint and before an interruption is read again on resume, with nothing left to change:
its transition must still be in the check-log, once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from consumer.domain.events import Cause, CauseType
from consumer.domain.sweep_log import SWEEP_LOG, SWEEPS_KEPT
from consumer.errors import StoreUnavailableError
from consumer.service import sweeps

from tests.unit.fakes import FakeCacheStore, FakeService

NOW = datetime.now(UTC).replace(microsecond=0)
TICK = Cause(CauseType.TICK, "tick-1")
SWEEP_ID = "full:tick-1:0/1"
USERS = range(1, 9)


def a_pass(uuid: str, status: str = "USABLE", expires_in: timedelta = -timedelta(hours=1)) -> Any:
    expiration = (NOW + expires_in).isoformat().replace("+00:00", "Z")
    return {"pass_uuid": uuid, "status": status, "payload": {"expiration": expiration}}


def expiring_users() -> FakeService:
    """Users 1..8, each with one pass ``p<user>`` that expired an hour ago."""
    store = FakeCacheStore(
        *({"_id": f"d{u}", "user_id": u, "passes": [a_pass(f"p{u}")]} for u in USERS)
    )
    service = FakeService(store)
    service.sweeper.checkpoint_users = 2
    return service


def checkpointed_after(store: FakeCacheStore, sweep_id: str = SWEEP_ID) -> Any:
    ends = [c for c in store.sweep_chunks.get(sweep_id, []) if c.batch_end]
    return ends[-1].last_user_id if ends else None


def logged(document: dict[str, Any]) -> dict[int, list[tuple[str, str]]]:
    """A check-log document's transitions by user (each user at most once: asserted)."""
    users = [e["user_id"] for e in document["log"]]
    assert len(users) == len(set(users)), f"a user listed twice: {users}"
    return {
        e["user_id"]: [(i["pass_uuid"], i["status_log"]) for i in e["invalid_list"]]
        for e in document["log"]
    }


def expired(*uuids: str) -> list[tuple[str, str]]:
    return [(u, "USABLE -> EXPIRED") for u in uuids]


async def test_a_user_written_after_the_last_checkpoint_is_listed_once_by_the_resumed_sweep() -> (
    None
):
    service = expiring_users()
    store = service.store
    # User 5 is written, then the sweep stops (the reply is lost, the pod dies) before
    # any checkpoint covers it.
    store.fail_after_write_of(5, StoreUnavailableError("injected: connection reset"))
    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    assert checkpointed_after(store) < 5
    assert store.doc("d5")["passes"][0]["status"] == "EXPIRED"

    await service.sweeper.full(None, True, NOW, TICK)

    [document] = store.check_logs
    assert logged(document) == {u: expired(f"p{u}") for u in USERS}


async def test_a_user_changed_again_on_resume_lists_both_transitions_after_a_second_stop() -> None:
    service = expiring_users()
    store = service.store
    store.fail_after_write_of(5, StoreUnavailableError("injected: connection reset"))
    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    # Meanwhile the refresher adds an expired pass to user 5 (and unsets next_check_at).
    store.cache.update_one(
        {"_id": "d5"}, {"$push": {"passes": a_pass("q5")}, "$unset": {"next_check_at": ""}}
    )
    # The resumed sweep expires it, and stops again right after that write.
    store.fail_after_write_of(5, StoreUnavailableError("injected: connection reset"))
    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    assert [p["status"] for p in store.doc("d5")["passes"]] == ["EXPIRED", "EXPIRED"]

    await service.sweeper.full(None, True, NOW, TICK)

    [document] = store.check_logs
    assert logged(document)[5] == expired("p5", "q5")
    assert sorted(logged(document)) == list(USERS)


async def test_a_resumed_sweep_lists_its_own_transitions_not_another_sweeps() -> None:
    service = expiring_users()
    service.sweeper.concurrency = 1  # the first run stops at user 5: 6-8 are still to do
    store = service.store
    store.fail_after_write_of(5, StoreUnavailableError("injected: connection reset"))
    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    # Before it resumes, another full sweep (another tick) expires a pass added to user 5.
    store.cache.update_one(
        {"_id": "d5"}, {"$push": {"passes": a_pass("q5")}, "$unset": {"next_check_at": ""}}
    )
    await service.sweeper.full(None, True, NOW, Cause(CauseType.TICK, "tick-2"))

    await service.sweeper.full(None, True, NOW, TICK)

    other, resumed = store.check_logs
    # Users 6-8 were still to do: the other sweep changed them, and lists them.
    assert logged(other) == {5: expired("q5"), 6: expired("p6"), 7: expired("p7"), 8: expired("p8")}
    assert logged(resumed) == {u: expired(f"p{u}") for u in range(1, 6)}


async def test_a_checkpoint_claims_only_the_users_whose_entries_it_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Users keep finishing while a checkpoint is saved in several chunks: its last chunk
    must not claim them. The next checkpoint fails: no later one (another worker's was
    waiting) may claim the users whose entries were lost with it. Either would make the
    resumed sweep skip users that no saved entry lists."""
    monkeypatch.setattr(sweeps, "_CHUNK_BYTES", 1)  # one entry per chunk
    service = expiring_users()
    store = service.store

    async def slow_save() -> None:  # the other users finish meanwhile
        for _ in range(100):
            await asyncio.sleep(0)

    async def nothing() -> None:
        return

    async def store_down() -> None:
        raise StoreUnavailableError("injected: MongoDB down")

    store.before("save_sweep_chunk", slow_save)  # first checkpoint, first chunk
    store.before("save_sweep_chunk", nothing)  # its second chunk
    store.before("save_sweep_chunk", store_down)  # the next checkpoint
    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    assert checkpointed_after(store) == 2

    await service.sweeper.full(None, True, NOW, TICK)

    [document] = store.check_logs
    assert logged(document) == {u: expired(f"p{u}") for u in USERS}


async def test_a_sweeps_record_is_written_only_over_the_record_it_read() -> None:
    """The record is derived from the one read: a concurrent sweep's record written in
    between must make the write conflict and re-read, not be overwritten."""
    store = FakeCacheStore({"_id": "d1", "user_id": 1, "passes": [a_pass("p1")]})
    service = FakeService(store)
    others = [{"sweep": "full:tick-0:0/1", "invalid_list": [{"pass_uuid": "x", "status_log": "y"}]}]

    async def another_sweep_records() -> None:
        store.cache.update_one({"_id": "d1"}, {"$set": {SWEEP_LOG: others}})

    store.before("write_user", another_sweep_records)
    await service.sweeper.full(None, True, NOW, TICK)

    assert store.doc("d1")[SWEEP_LOG] == [
        *others,
        {
            "sweep": SWEEP_ID,
            "invalid_list": [{"pass_uuid": "p1", "status_log": "USABLE -> EXPIRED"}],
        },
    ]
    assert service.metrics.registry.get_sample_value("pass_status_write_conflicts_total") == 1


async def test_a_document_keeps_the_records_of_the_last_sweeps_that_changed_it() -> None:
    store = FakeCacheStore({"_id": "d1", "user_id": 1, "passes": []})
    service = FakeService(store)
    for n in range(1, SWEEPS_KEPT + 2):
        store.cache.update_one({"_id": "d1"}, {"$push": {"passes": a_pass(f"q{n}")}})
        await service.sweeper.full(None, True, NOW, Cause(CauseType.TICK, f"tick-{n}"))
    records = store.doc("d1")[SWEEP_LOG]
    assert [(r["sweep"], [i["pass_uuid"] for i in r["invalid_list"]]) for r in records] == [
        (f"full:tick-{n}:0/1", [f"q{n}"]) for n in range(2, SWEEPS_KEPT + 2)
    ]


async def test_due_sweeps_and_one_user_checks_record_nothing() -> None:
    store = FakeCacheStore(
        {"_id": "d1", "user_id": 1, "passes": [a_pass("p1")]},
        {"_id": "d2", "user_id": 2, "passes": [a_pass("p2")]},
    )
    service = FakeService(store)
    await service.sweeper.due(NOW, 0, 1, True, TICK, user_id=1)
    await service.sweeper.full(2, True, NOW, TICK)
    assert [d["passes"][0]["status"] for d in store.cache.docs] == ["EXPIRED", "EXPIRED"]
    assert [SWEEP_LOG in d for d in store.cache.docs] == [False, False]
