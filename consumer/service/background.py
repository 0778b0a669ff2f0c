"""The consumer's periodic jobs: orphaned outbox entries, and health and lag gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from consumer.adapters.metrics import Metrics
from consumer.logs import get_logger
from consumer.policy import Action, Fault, Path, decide
from consumer.service.consume_plan import ConsumePlan
from consumer.service.health import Health
from consumer.service.outbox import OutboxRelay
from consumer.settings import Settings

log = get_logger(__name__)


async def every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` every ``seconds`` until cancelled. A failed run is never fatal: the next
    run is the retry. The policy's action says how loudly: a pause (an output refusing)
    or an unforeseen error as an error, a dependency away as a warning."""
    name = getattr(job, "__name__", "job")
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:
            decision = decide(exc, Path.BACKGROUND)
            fields = {
                "job": name,
                "action": str(decision.action),
                "reason": decision.verdict.reason,
                "error": str(exc)[:300],
            }
            if decision.verdict.fault is Fault.BUG:
                log.exception("background_job_crashed", **fields)
            elif decision.action is Action.PAUSE:
                log.error("background_job_refused", **fields)  # noqa: TRY400 - classified, no trace needed
            else:
                log.warning("background_job_failed", **fields)


class BackgroundJobs:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        relay: OutboxRelay,
        health: Health,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._relay = relay
        self._health = health
        self._metrics = metrics
        # The committed offset last seen per partition, and when it was first seen.
        self._commits: dict[tuple[str, int], tuple[int, float]] = {}

    async def keep_watermark(self) -> None:
        await self._relay.keep_watermark(datetime.now(UTC))

    async def relay_orphans(self) -> None:
        # Another replica's relays read as unpublished until it saves its watermark (about
        # every watermark interval): entries younger than a few intervals are in flight.
        in_flight = max(5.0, 3 * self._settings.outbox_watermark_interval_seconds)
        backlog = await self._relay.relay_orphans(
            datetime.now(UTC),
            timedelta(seconds=self._settings.outbox_orphan_age_seconds),
            in_flight=timedelta(seconds=in_flight),
        )
        self._metrics.outbox_backlog.set(backlog)

    async def observe(
        self, probes: Callable[[], Awaitable[tuple[bool, bool]]], plan: ConsumePlan
    ) -> None:
        """Refresh health probes, lag and assignment gauges."""
        mongodb_ok, kafka_ok = await probes()
        self._health.mongodb_ok, self._health.kafka_ok = mongodb_ok, kafka_ok
        assigned = self._consumer.assignment()
        self._health.assigned_partitions = len(assigned)
        self._metrics.assigned_partitions.set(len(assigned))
        self._metrics.ready.set(1 if self._health.ready() else 0)
        self._metrics.consumer_lag.clear()
        self._metrics.consumer_lag_seconds.clear()
        now = time.time()
        mine = {(tp.topic, tp.partition) for tp in assigned}
        for gone in set(self._commits) - mine:
            del self._commits[gone]
            self._metrics.last_commit.remove(gone[0], str(gone[1]))
        for gone in set(self._metrics.consumed_event_time) - mine:
            del self._metrics.consumed_event_time[gone]
        for tp in assigned:
            # Re-checked at each step: a rebalance may run during the awaits.
            if tp not in self._consumer.assignment():
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = plan.committed.get(tp)
            if position is None:
                try:
                    position = await asyncio.wait_for(self._consumer.committed(tp), 5) or 0
                except (KafkaError, TimeoutError):
                    continue
            lag = max(0, highwater - position)
            sweeping = tp in plan.ticking
            self._observe_partition(tp.topic, tp.partition, lag, position, now, sweeping)

    def _observe_partition(
        self, topic: str, partition: int, lag: int, position: int, now: float, sweeping: bool
    ) -> None:
        key, label = (topic, partition), str(partition)
        self._metrics.consumer_lag.labels(topic, label).set(lag)
        seen = self._commits.get(key)
        if seen is None or position > seen[0] or sweeping:
            # First sight (assignment) counts as a commit: a partition stuck from the
            # moment it was assigned is reported after the same delay. A tick partition is
            # committed when its sweep ends, which may take hours: while it runs, it moves.
            self._commits[key] = (position, now)
            self._metrics.last_commit.labels(topic, label).set(now)
        consumed = self._metrics.consumed_event_time.get(key)
        if sweeping:
            return  # its wait is the sweep's duration (pass_status_sweep_duration_seconds)
        if lag == 0:
            self._metrics.consumer_lag_seconds.labels(topic, label).set(0)
        elif consumed is not None:
            self._metrics.consumer_lag_seconds.labels(topic, label).set(max(0.0, now - consumed))
