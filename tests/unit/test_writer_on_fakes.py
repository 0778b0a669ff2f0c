"""Optimistic concurrency on the fakes: a write never overwrites a concurrent change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.events import Cause, CauseType
from consumer.errors import WriteConflictError
from consumer.service.relay_ledger import RelayTicket
from consumer.service.writer import UserResult, UserToWrite, WriteOptions

from tests.unit.fakes import STAMP, FakeCacheStore, FakeService

NOW = datetime.now(UTC).replace(microsecond=0)
TICK = Cause(CauseType.TICK, "tick-1")
OPTIONS = WriteOptions(concurrency=4, ticket=RelayTicket(1, STAMP.key))


def a_pass(uuid: str, status: str, expires_in: timedelta) -> dict[str, Any]:
    expiration = (NOW + expires_in).isoformat()
    return {"pass_uuid": uuid, "status": status, "payload": {"expiration": expiration}}


async def test_a_refresher_write_between_read_and_write_is_kept_and_the_user_re_evaluated() -> None:
    store = FakeCacheStore(
        {"_id": "d7", "user_id": 7, "passes": [a_pass("a", "USABLE", -timedelta(hours=1))]}
    )
    service = FakeService(store)
    fresh = a_pass("b", "USABLE", -timedelta(minutes=5))

    async def refresher() -> None:  # the other service rewrites passes, adding one
        store.cache.update_one({"_id": "d7"}, {"$push": {"passes": fresh}})

    store.before("write_user", refresher)
    read = store.doc("d7")
    (result,) = await service.writer.update_round([UserToWrite(read, (), TICK)], NOW, OPTIONS)

    assert isinstance(result, UserResult)
    assert result.written
    assert [(p["pass_uuid"], p["status"]) for p in store.doc("d7")["passes"]] == [
        ("a", "EXPIRED"),
        ("b", "EXPIRED"),
    ]
    assert service.metrics.registry.get_sample_value("pass_status_write_conflicts_total") == 1
    assert store.calls["find_user"] == 1  # re-read once


async def test_a_document_that_keeps_changing_is_a_transient_error_and_nothing_is_written() -> None:
    store = FakeCacheStore(
        {"_id": "d7", "user_id": 7, "passes": [a_pass("a", "USABLE", -timedelta(hours=1))]}
    )
    service = FakeService(store)  # conflict_retries=3: four attempts

    async def refresher() -> None:
        store.cache.update_one({"_id": "d7"}, {"$inc": {"passes.0.payload.n": 1}})

    for _ in range(4):
        store.before("write_user", refresher)
    (outcome,) = await service.writer.update_round(
        [UserToWrite(store.doc("d7"), (), TICK)], NOW, OPTIONS
    )
    assert isinstance(outcome, WriteConflictError)  # that user's outcome, for the policy
    assert store.write_calls_of(7) == 4  # in the bulk, then three times alone
    doc = store.doc("d7")
    assert doc["passes"][0]["status"] == "USABLE"
    assert doc["passes"][0]["payload"]["n"] == 4
    assert "pass_status_outbox" not in doc
