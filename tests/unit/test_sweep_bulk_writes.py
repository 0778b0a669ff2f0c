"""A sweep writes its changed users in one unordered bulk per group (issue 20).

The sweep reads users in groups of its concurrency; a group's writes go to the store in
one ``write_users`` call. A conflicted user is re-read and written alone; a user whose
document the store refuses is skipped and counted, the rest of its group written; a
fault of the whole bulk stops the sweep, as a single write's fault did.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from consumer.domain.events import Cause, CauseType
from consumer.errors import DocumentRejectedError, StoreUnavailableError

from tests.unit.fakes import FakeCacheStore, FakeService

NOW = datetime.now(UTC).replace(microsecond=0)
TICK = Cause(CauseType.TICK, "tick-1")
USERS = list(range(1, 11))
GROUP = FakeService.SETTINGS.user_concurrency  # 4: groups of 4, 4 and 2


def a_pass(uuid: str, expires_in: timedelta = -timedelta(hours=1)) -> dict[str, Any]:
    expiration = (NOW + expires_in).isoformat().replace("+00:00", "Z")
    return {"pass_uuid": uuid, "status": "USABLE", "payload": {"expiration": expiration}}


def expiring_users() -> FakeService:
    """Users 1..10, each with one pass ``p<user>`` that expired an hour ago."""
    return FakeService(
        FakeCacheStore(
            *({"_id": f"d{u}", "user_id": u, "passes": [a_pass(f"p{u}")]} for u in USERS)
        )
    )


async def sweep(service: FakeService, mode: str, *, apply: bool = True) -> Any:
    if mode == "due":
        return await service.sweeper.due(NOW, 0, 1, apply, TICK)
    return await service.sweeper.full(None, apply, NOW, TICK)


def statuses(store: FakeCacheStore) -> dict[int, str]:
    return {u: store.doc(f"d{u}")["passes"][0]["status"] for u in USERS}


def skipped(service: FakeService, mode: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "pass_status_sweep_users_skipped_total", {"mode": mode, "reason": "store_rejected"}
    )
    return value or 0.0


@pytest.mark.parametrize("mode", ["due", "full"])
async def test_a_sweeps_changed_users_cost_one_bulk_per_group_and_no_single_write(
    mode: str,
) -> None:
    service = expiring_users()
    store = service.store

    result = await sweep(service, mode)

    assert store.bulk_sizes == [4, 4, 2]
    assert len(store.bulk_sizes) == math.ceil(len(USERS) / GROUP)
    assert store.single_writes == []
    assert statuses(store) == dict.fromkeys(USERS, "EXPIRED")
    assert result.documents_changed == len(USERS)
    assert sorted(e["user_id"] for e in service.status_events()) == USERS


async def test_a_conflicted_user_of_a_group_is_read_again_and_written_alone() -> None:
    service = expiring_users()
    store = service.store

    async def refresher_adds_a_pass_to_user_2() -> None:
        store.cache.update_one(
            {"_id": "d2"}, {"$push": {"passes": a_pass("new", timedelta(days=30))}}
        )

    store.before("write_users", refresher_adds_a_pass_to_user_2)  # between read and bulk

    result = await service.sweeper.due(NOW, 0, 1, True, TICK)

    assert store.bulk_sizes == [4, 4, 2]
    assert store.single_writes == [2]  # its retry, alone
    assert store.calls["find_user"] == 1
    assert [p["status"] for p in store.doc("d2")["passes"]] == ["EXPIRED", "USABLE"]
    assert statuses(store) == dict.fromkeys(USERS, "EXPIRED")
    assert result.documents_changed == len(USERS)
    conflicts = service.metrics.registry.get_sample_value("pass_status_write_conflicts_total")
    assert conflicts == 1


@pytest.mark.parametrize("mode", ["due", "full"])
async def test_a_refused_user_of_a_group_is_skipped_and_counted_and_the_others_written(
    mode: str,
) -> None:
    service = expiring_users()
    store = service.store
    store.fail_writes_of(2, DocumentRejectedError("user 2: too large", user_id=2, code=17419))

    result = await sweep(service, mode)

    assert store.bulk_sizes == [4, 4, 2]
    assert store.write_calls_of(2) == 1  # refused once, not retried
    assert store.single_writes == []
    assert statuses(store) == {u: "USABLE" if u == 2 else "EXPIRED" for u in USERS}
    assert skipped(service, mode) == 1
    assert result.documents_changed == len(USERS) - 1
    assert sorted(e["user_id"] for e in service.status_events()) == [u for u in USERS if u != 2]
    if mode == "full":
        [document] = store.check_logs
        [entry] = [e for e in document["log"] if e["user_id"] == 2]
        assert entry["skipped_list"][0]["reason"].startswith("skipped (store_rejected)")


async def test_a_failed_bulk_stops_the_sweep_and_the_resumed_sweep_writes_every_user() -> None:
    service = expiring_users()
    store = service.store
    store.fail_next("write_users", StoreUnavailableError("injected: MongoDB down"))

    with pytest.raises(StoreUnavailableError):
        await service.sweeper.full(None, True, NOW, TICK)
    assert skipped(service, "full") == 0
    assert store.check_logs == []

    await service.sweeper.full(None, True, NOW, TICK)

    assert statuses(store) == dict.fromkeys(USERS, "EXPIRED")
    assert store.single_writes == []
    [document] = store.check_logs
    assert sorted(e["user_id"] for e in document["log"]) == USERS


@pytest.mark.parametrize("mode", ["due", "full"])
async def test_a_dry_run_writes_nothing(mode: str) -> None:
    service = expiring_users()
    store = service.store

    result = await sweep(service, mode, apply=False)

    assert store.bulk_sizes == []
    assert store.single_writes == []
    assert statuses(store) == dict.fromkeys(USERS, "USABLE")
    assert result.documents_read == len(USERS)
    [document] = store.check_logs
    assert sorted(e["user_id"] for e in document["log"]) == USERS
