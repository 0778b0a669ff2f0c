"""Liveness and readiness rules (consumer/service/health.py) and the runtime metrics."""

from __future__ import annotations

import asyncio
import time

from consumer.adapters.metrics import Metrics
from consumer.service.health import Health, watch_event_loop
from prometheus_client import CollectorRegistry


def _ready_health(**changes: object) -> Health:
    health = Health(
        started=True, joined_group=True, mongodb_ok=True, kafka_ok=True, assigned_partitions=3
    )
    for name, value in changes.items():
        setattr(health, name, value)
    return health


def test_a_replica_without_partitions_is_ready_as_documented() -> None:
    assert _ready_health(assigned_partitions=0).ready() is True
    assert _ready_health(assigned_partitions=0).report()["assigned_partitions"] == 0


def test_not_ready_while_waiting_for_a_store_or_backing_off_or_stopping() -> None:
    assert Health().ready() is False  # waiting for dependencies at start
    assert _ready_health(mongodb_ok=False).ready() is False
    assert _ready_health(kafka_ok=False).ready() is False
    assert _ready_health(faults={"consume": "retry: unavailable"}).ready() is False
    assert _ready_health(stopping=True).ready() is False
    assert _ready_health(joined_group=False).ready() is False


def test_liveness_fails_when_the_heartbeat_is_older_than_the_configured_limit() -> None:
    health = Health(max_stall_seconds=5)
    assert health.alive()
    health.heartbeat = time.monotonic() - 6
    assert not health.alive()
    assert health.liveness_report()["alive"] is False
    health.beat(0.01)
    assert health.alive()


async def test_the_loop_watch_keeps_a_waiting_service_alive_and_measures_lag() -> None:
    health = Health(max_stall_seconds=2)
    lags: list[float] = []
    task = asyncio.create_task(watch_event_loop(health, lags.append, interval=0.05))
    health.watch("event_loop_watch", task)
    await asyncio.sleep(0.3)  # an await (e.g. waiting for MongoDB): the loop turns
    time.sleep(0.2)  # noqa: ASYNC251 - on purpose: blocks the loop, so the watch wakes late
    await asyncio.sleep(0.15)
    assert health.alive()
    assert len(lags) >= 4
    assert max(lags) >= 0.1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert health.dead_tasks() == ["event_loop_watch"]
    assert not health.alive()  # a watched task that ended fails liveness...
    health.stopping = True
    assert health.dead_tasks() == []  # ...unless the service is shutting down


def test_runtime_collectors_rebalances_and_build_revision_are_exported() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    names = {s.name for family in registry.collect() for s in family.samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= names
    assert "python_gc_collections_total" in names
    assert "python_info" in names
    assert registry.get_sample_value("pass_status_rebalances_total", {"kind": "assigned"}) == 0
    metrics.rebalances.labels("assigned").inc()
    assert registry.get_sample_value("pass_status_rebalances_total", {"kind": "assigned"}) == 1
    info = [s for f in registry.collect() for s in f.samples if s.name == "pass_status_build_info"]
    assert len(info) == 1
    assert set(info[0].labels) == {"version", "revision", "python_version"}
    assert info[0].labels["revision"]


async def test_a_batch_awaiting_longer_than_the_limit_does_not_fail_liveness() -> None:
    """A slow store makes one batch await for longer than the stall limit: the loop still
    turns, so the watcher keeps the service live (only a blocked loop fails it)."""
    health = Health(max_stall_seconds=1.2)
    task = asyncio.create_task(watch_event_loop(health, lambda _lag: None, interval=0.1))
    health.watch("event_loop_watch", task)
    started = time.monotonic()
    await asyncio.sleep(2.0)  # the "batch": an await on a slow MongoDB
    assert time.monotonic() - started >= 2.0
    assert health.alive()
    time.sleep(1.3)  # noqa: ASYNC251 - on purpose: a loop blocked past the limit
    assert not health.alive()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
