"""Interval summaries while the check-log write fails (issue 19): they no longer pile up
without bound. At most PASS_STATUS_CHECK_LOG_MAX_PENDING_INTERVALS wait; past that the
oldest are dropped, counted and logged; those still waiting at stop are counted and logged
too. What is kept is written later in order, each at its own idempotent ``_id``."""

from __future__ import annotations

import logging

import pytest
from consumer.domain.checklog import UserLog
from consumer.errors import StoreUnavailableError
from consumer.service.checklog import IntervalSummary
from consumer.settings import Settings

from tests.unit.fakes import FakeCacheStore, FakeService


def transition(user_id: int) -> UserLog:
    return UserLog(user_id, ((f"p{user_id}", "USING -> EXPIRED"),), ())


def dropped(service: FakeService, reason: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "pass_status_check_log_intervals_dropped_total", {"reason": reason}
    )
    assert value is not None
    return value


def pending_gauge(service: FakeService) -> float | None:
    return service.metrics.registry.get_sample_value("pass_status_check_log_intervals_pending")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == name]


async def _fail_one_interval_each(
    service: FakeService, summary: IntervalSummary, users: range
) -> None:
    for user_id in users:
        summary.add(transition(user_id))
        with pytest.raises(StoreUnavailableError):
            await summary.flush(service.sink)


async def test_pending_intervals_are_bounded_oldest_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeCacheStore()
    service = FakeService(store)
    summary = IntervalSummary(max_pending=3, metrics=service.metrics)
    store.fail_next("insert_check_log", StoreUnavailableError("down"), times=5)
    caplog.set_level(logging.ERROR)

    await _fail_one_interval_each(service, summary, range(1, 6))

    assert summary.pending_intervals == 3
    assert pending_gauge(service) == 3
    assert dropped(service, "overflow") == 2
    logged = events(caplog, "check_log_intervals_dropped")
    assert [(e["reason"], e["intervals"], e["entries"]) for e in logged] == [
        ("overflow", 1, 1),
        ("overflow", 1, 1),
    ]

    await summary.flush(service.sink)  # the store is back: the three kept, oldest first

    logs = store.check_logs
    assert [[entry["user_id"] for entry in doc["log"]] for doc in logs] == [[3], [4], [5]]
    assert [doc["_id"] for doc in logs] == sorted(doc["_id"] for doc in logs)
    assert summary.pending_intervals == 0
    assert pending_gauge(service) == 0
    assert len(summary) == 0


async def test_intervals_still_pending_at_stop_are_counted_and_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeCacheStore()
    service = FakeService(store)
    summary = IntervalSummary(max_pending=10, metrics=service.metrics)
    store.fail_next("insert_check_log", StoreUnavailableError("down"), times=2)
    caplog.set_level(logging.ERROR)
    await _fail_one_interval_each(service, summary, range(1, 3))
    summary.add(transition(9))  # the interval still open

    summary.abandon()

    assert dropped(service, "shutdown") == 3
    assert dropped(service, "overflow") == 0
    (logged,) = events(caplog, "check_log_intervals_dropped")
    assert (logged["reason"], logged["intervals"], logged["entries"]) == ("shutdown", 3, 3)
    assert len(summary) == 0
    summary.abandon()  # nothing left: nothing more counted
    assert dropped(service, "shutdown") == 3


async def test_a_failed_write_keeps_the_interval_and_its_id() -> None:
    store = FakeCacheStore()
    service = FakeService(store)
    summary = IntervalSummary(max_pending=3, metrics=service.metrics)
    store.fail_next("insert_check_log", StoreUnavailableError("down"), times=2)
    await _fail_one_interval_each(service, summary, range(7, 8))
    with pytest.raises(StoreUnavailableError):
        await summary.flush(service.sink)

    await summary.flush(service.sink)

    (doc,) = store.check_logs
    assert [entry["user_id"] for entry in doc["log"]] == [7]
    assert dropped(service, "overflow") == 0


def test_the_bound_is_a_setting_of_at_least_one() -> None:
    assert Settings.from_env({}).check_log_max_pending_intervals == 60
    value = Settings.from_env({"PASS_STATUS_CHECK_LOG_MAX_PENDING_INTERVALS": "5"})
    assert value.check_log_max_pending_intervals == 5
    with pytest.raises(Exception, match="PASS_STATUS_CHECK_LOG_MAX_PENDING_INTERVALS"):
        Settings.from_env({"PASS_STATUS_CHECK_LOG_MAX_PENDING_INTERVALS": "0"})
