"""Tick partitions' records, run in background tasks (one per paused partition).

A sweep can take minutes: running it in a task keeps the consume loop polling (no
``max_poll_interval_ms`` overrun). Each tick is retried through transient faults; the
runner is told when a tick ends (to commit past it) and when a task stops (to resume the
partition): see :class:`consumer.service.consume_plan.ConsumePlan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import TopicPartition

from consumer.adapters.metrics import Metrics
from consumer.errors import TransientError
from consumer.logs import get_logger
from consumer.service.backoff import Backoff
from consumer.service.deadletter import InputRecord, input_record
from consumer.service.health import Health
from consumer.service.ticks import TickHandler
from consumer.settings import Settings

log = get_logger(__name__)


class TickTasks:
    def __init__(
        self,
        ticks: TickHandler,
        settings: Settings,
        metrics: Metrics,
        health: Health,
        *,
        sleep: Callable[[float], Awaitable[bool]],
        recovered: Callable[[], None],
        ended: Callable[[TopicPartition, int], Awaitable[Any]],
        stopped: Callable[[TopicPartition], Awaitable[Any]],
    ) -> None:
        self._ticks = ticks
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._sleep = sleep
        self._recovered = recovered
        self._ended = ended
        self._stopped = stopped
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, tp: TopicPartition, messages: list[Any]) -> None:
        self._tasks[tp] = asyncio.create_task(self._run_ticks(tp, messages))

    async def cancel(self, partitions: Iterable[TopicPartition]) -> None:
        """Cancel the tasks of ``partitions`` (their current tick stays uncommitted)."""
        tasks = [self._tasks.pop(tp) for tp in partitions if tp in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def finish(self, grace: float) -> None:
        """Let the tasks finish within ``grace`` seconds, then cancel the rest."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()  # its offset stays uncommitted: the sweep runs again elsewhere
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run_ticks(self, tp: TopicPartition, messages: list[Any]) -> None:
        try:
            for message in messages:
                if not await self._run_tick(tp, input_record(message)):
                    return
                await self._ended(tp, message.offset)
        finally:
            self._tasks.pop(tp, None)
            await self._stopped(tp)

    async def _run_tick(self, tp: TopicPartition, record: InputRecord) -> bool:
        """Run one tick until done, retrying transient faults; False if stopping first.

        An unexpected error is logged and the tick is passed over: ticks are periodic
        triggers, the next one covers the same users, and a stuck tick would hold up every
        later tick of its partition. On shutdown a retried tick is left uncommitted.
        """
        backoff = Backoff(
            self._settings.backoff_initial_seconds, self._settings.backoff_max_seconds
        )
        while True:
            try:
                await self._ticks.handle(record)
                break
            except TransientError as exc:
                self._metrics.retries.labels("tick").inc()
                self._health.backing_off = True
                self._health.last_error = str(exc)[:300]
                delay = backoff.next_delay()
                log.warning(
                    "tick_retry",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=record.offset,
                    delay_seconds=round(delay, 2),
                    error=str(exc)[:300],
                )
                if await self._sleep(delay):
                    return False
            except Exception:  # see the docstring: a broken tick must not wedge the rest
                self._metrics.events_consumed.labels(tp.topic, "failed").inc()
                log.exception(
                    "tick_failed", topic=tp.topic, partition=tp.partition, offset=record.offset
                )
                break
        self._recovered()
        return True
