"""Tick partitions' records, run in background tasks (one per paused partition).

A sweep can take minutes: running it in a task keeps the consume loop polling (no
``max_poll_interval_ms`` overrun). Each tick partition waits through faults with its own
:class:`~consumer.service.retry.Retrier` (its fault and back-off are its own: one tick
finishing never clears the consume loop's); the runner is told when a tick's outcome is
durable (to commit past it) and when a task stops (to resume the partition): see
:class:`consumer.service.consume_plan.ConsumePlan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import TopicPartition

from consumer.adapters.metrics import Metrics
from consumer.logs import get_logger
from consumer.policy import Action, Path, decide
from consumer.service.deadletter import InputRecord, input_record
from consumer.service.retry import Retrier
from consumer.service.ticks import TickHandler

log = get_logger(__name__)


class TickTasks:
    def __init__(
        self,
        ticks: TickHandler,
        metrics: Metrics,
        *,
        retrier: Callable[[str], Retrier],
        ended: Callable[[TopicPartition, int], Awaitable[Any]],
        stopped: Callable[[TopicPartition], Awaitable[Any]],
    ) -> None:
        self._ticks = ticks
        self._metrics = metrics
        self._retrier = retrier
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
        """Run one tick until its outcome is durable; False if stopping first.

        The handler dead-letters a tick the policy says is at fault, and raises the rest:
        a retry or a pause (a dependency away, an output refusing, the tick's own dead
        letter not published) waits and runs the tick again, uncommitted meanwhile. An
        error escaping the dead-letter path itself is logged and counted, and the tick is
        passed over: a stuck tick would hold up every later tick of its partition, and the
        next tick covers the same users.
        """
        retrier = self._retrier(f"tick:{tp.topic}-{tp.partition}")
        try:
            while True:
                try:
                    await self._ticks.handle(record)
                    break
                except Exception as exc:
                    decision = decide(exc, Path.INPUT)
                    if decision.action in (Action.RETRY, Action.PAUSE):
                        where = {"topic": tp.topic, "partition": tp.partition}
                        if await retrier.wait("tick", decision, exc, offset=record.offset, **where):
                            retrier.abandon()  # stopping: the tick runs again elsewhere
                            return False
                        continue
                    self._metrics.events_consumed.labels(tp.topic, "failed").inc()
                    log.exception(
                        "tick_failed", topic=tp.topic, partition=tp.partition, offset=record.offset
                    )
                    break
        except BaseException:
            # Cancelled (the partition was revoked): its fault is no longer this replica's.
            retrier.abandon()
            raise
        retrier.succeeded()
        return True
