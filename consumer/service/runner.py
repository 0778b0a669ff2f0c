"""The consume loop: fetch bounded batches, apply them, commit only what is durable.

- ticket-used records are applied batch by batch, inline; their offsets are committed
  after the batch's MongoDB writes and status-change events are durable/published;
- a tick partition's records run in a background task while that partition is paused, so
  a long sweep never holds up polling (no ``max_poll_interval_ms`` overrun); its offset is
  committed when the sweep finishes;
- a transient fault seeks the batch's partitions back to the batch start and backs off:
  nothing is committed past unapplied work, and the batch is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumer.adapters.metrics import Metrics
from consumer.errors import TransientError
from consumer.logs import get_logger
from consumer.service.backoff import Backoff
from consumer.service.checklog import CheckLogSink, IntervalSummary
from consumer.service.deadletter import InputRecord
from consumer.service.health import Health
from consumer.service.outbox import OutboxRelay
from consumer.service.ticket_used import TicketUsedHandler
from consumer.service.ticks import TickHandler
from consumer.settings import Settings

log = get_logger(__name__)

_COMMIT_TIMEOUT_SECONDS = 30.0


def _to_input(message: Any) -> InputRecord:
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=message.timestamp,
        headers=tuple(message.headers or ()),
    )


class Runner:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        ticket_used: TicketUsedHandler,
        ticks: TickHandler,
        relay: OutboxRelay,
        sink: CheckLogSink,
        summary: IntervalSummary,
        health: Health,
        metrics: Metrics,
        probes: Callable[[], Awaitable[tuple[bool, bool]]],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._ticket_used = ticket_used
        self._ticks = ticks
        self._relay = relay
        self._sink = sink
        self._summary = summary
        self._health = health
        self._metrics = metrics
        self._probes = probes
        self._batch_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._tick_tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._backoff = Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)
        self._stop = asyncio.Event()
        self._last_fault = ""

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish cleanly within the grace period."""
        self._stop = stop
        topics = [self._settings.topic_ticket_used, self._settings.topic_tick]
        self._consumer.subscribe(topics, listener=_Listener(self))
        await self._consumer.start()
        self._health.started = True
        background = [
            asyncio.create_task(
                self._every(self._settings.check_log_interval_seconds, self._flush_summary)
            ),
            asyncio.create_task(
                self._every(self._settings.outbox_relay_interval_seconds, self._relay_orphans)
            ),
            asyncio.create_task(self._every(5.0, self._observe)),
        ]
        log.info("consumer_started", topics=topics, group_id=self._settings.group_id)
        try:
            while not stop.is_set():
                await self._poll_once()
        finally:
            await self._shut_down(background)

    async def _shut_down(self, background: list[asyncio.Task[None]]) -> None:
        """Finish within the grace period: ticks get 60 % of it, the summary 10 %, and
        the consumer always leaves the group (so its partitions move at once)."""
        grace = self._settings.shutdown_grace_seconds
        self._health.stopping = True
        log.info("consumer_stopping", in_flight_ticks=len(self._tick_tasks))
        try:
            await self._finish_ticks(grace * 0.6)
            await _cancel_all(background)
            with contextlib.suppress(TransientError, TimeoutError):
                await asyncio.wait_for(self._flush_summary(), grace * 0.1)
        finally:
            await self._consumer.stop()  # leaves the group
            log.info("consumer_stopped")

    async def _poll_once(self) -> None:
        self._health.heartbeat = time.monotonic()
        try:
            batch = await self._consumer.getmany(
                timeout_ms=self._settings.fetch_timeout_ms,
                max_records=self._settings.max_batch_records,
            )
        except KafkaError as exc:
            self._metrics.kafka_errors.labels("fetch").inc()
            await self._back_off("fetch", exc)
            return
        self._health.joined_group = True
        if self._health.backing_off and self._last_fault == "fetch":
            self._recovered()
        if not batch:
            return
        async with self._batch_lock:
            fault = await self._handle_batch(batch)
        if fault is not None:
            # Sleep outside the lock, so a rebalance is never held up by a back-off.
            await self._back_off("ticket_used_batch", fault)

    async def _handle_batch(self, batch: dict[TopicPartition, list[Any]]) -> TransientError | None:
        """Apply a batch and commit it; on a transient fault seek back and return it."""
        started = asyncio.get_running_loop().time()
        ticket_parts = {
            tp: msgs for tp, msgs in batch.items() if tp.topic == self._settings.topic_ticket_used
        }
        tick_parts = {
            tp: msgs for tp, msgs in batch.items() if tp.topic == self._settings.topic_tick
        }
        for tp, msgs in tick_parts.items():
            # Paused until its sweep ends; polling goes on for every other partition.
            self._consumer.pause(tp)
            self._tick_tasks[tp] = asyncio.create_task(self._run_ticks(tp, msgs))
        if not ticket_parts:
            return None
        records = [_to_input(m) for msgs in ticket_parts.values() for m in msgs]
        self._metrics.batch_size.observe(len(records))
        try:
            await self._ticket_used.handle(records)
        except TransientError as exc:
            for tp, msgs in ticket_parts.items():
                self._consumer.seek(tp, msgs[0].offset)
            return exc
        await self._commit({tp: msgs[-1].offset + 1 for tp, msgs in ticket_parts.items()})
        self._recovered()
        self._metrics.batch_duration.observe(asyncio.get_running_loop().time() - started)
        return None

    async def _run_ticks(self, tp: TopicPartition, messages: list[Any]) -> None:
        try:
            for message in messages:
                await self._run_tick(tp, _to_input(message))
        finally:
            self._tick_tasks.pop(tp, None)
            if tp in self._consumer.assignment():
                self._consumer.resume(tp)

    async def _run_tick(self, tp: TopicPartition, record: InputRecord) -> None:
        """Run one tick until done, retrying transient faults; then commit its offset.

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
                    return
            except Exception:  # see the docstring: a broken tick must not wedge the rest
                self._metrics.events_consumed.labels(tp.topic, "failed").inc()
                log.exception(
                    "tick_failed", topic=tp.topic, partition=tp.partition, offset=record.offset
                )
                break
        self._recovered()
        await self._commit({tp: record.offset + 1})

    async def _finish_ticks(self, grace: float) -> None:
        tasks = list(self._tick_tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()  # its offset stays uncommitted: the sweep runs again elsewhere
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tick_tasks.clear()

    # -- commits, back-off, health ---------------------------------------------------

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit offsets of partitions still assigned; a failed commit is never fatal."""
        assigned = self._consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not mine:
            return
        async with self._commit_lock:
            started = asyncio.get_running_loop().time()
            try:
                # Bounded: aiokafka retries a commit for as long as the coordinator is
                # unknown, and the batch lock is held meanwhile.
                await asyncio.wait_for(self._consumer.commit(mine), _COMMIT_TIMEOUT_SECONDS)
            except (KafkaError, TimeoutError) as exc:
                # The records are delivered again (here or elsewhere) and re-applied
                # harmlessly: the effects are durable and the rules idempotent.
                self._metrics.kafka_errors.labels("commit").inc()
                log.warning("commit_failed", error=repr(exc)[:300], partitions=len(mine))
                return
            finally:
                self._metrics.kafka_duration.labels("commit").observe(
                    asyncio.get_running_loop().time() - started
                )
        self._committed.update(mine)

    async def _back_off(self, operation: str, exc: Exception) -> None:
        self._metrics.retries.labels(operation).inc()
        self._health.backing_off = True
        self._health.last_error = str(exc)[:300]
        delay = self._backoff.next_delay()
        self._last_fault = operation
        log.warning(
            "transient_fault",
            operation=operation,
            delay_seconds=round(delay, 2),
            error=str(exc)[:300],
        )
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on shutdown; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    def _recovered(self) -> None:
        if self._health.backing_off:
            log.info("recovered", after_attempts=self._backoff.attempt)
        self._backoff.reset()
        self._health.backing_off = False
        self._health.mongodb_ok = self._health.kafka_ok = True

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except TransientError as exc:
                log.warning("background_job_failed", job=job.__name__, error=str(exc)[:300])
            except Exception:
                log.exception("background_job_crashed", job=job.__name__)

    async def _flush_summary(self) -> None:
        if not len(self._summary):
            return
        logs = self._summary.drain()
        try:
            await self._sink.write(datetime.now(UTC), None, True, logs, kind="interval")
        except (TransientError, TimeoutError, asyncio.CancelledError):
            # Keep them for the next interval; the summary holds only users with
            # transitions, merged per user, so it cannot grow past the users changed.
            for entry in logs:
                self._summary.add(entry)
            raise

    async def _relay_orphans(self) -> None:
        backlog = await self._relay.relay_orphans(
            datetime.now(UTC), timedelta(seconds=self._settings.outbox_orphan_age_seconds)
        )
        self._metrics.outbox_backlog.set(backlog)

    async def _observe(self) -> None:
        """Refresh health probes, lag and assignment gauges."""
        mongodb_ok, kafka_ok = await self._probes()
        self._health.mongodb_ok, self._health.kafka_ok = mongodb_ok, kafka_ok
        assigned = self._consumer.assignment()
        self._health.assigned_partitions = len(assigned)
        self._metrics.assigned_partitions.set(len(assigned))
        self._metrics.ready.set(1 if self._health.ready() else 0)
        self._metrics.consumer_lag.clear()
        for tp in assigned:
            # Re-checked at each step: a rebalance may run during the awaits.
            if tp not in self._consumer.assignment():
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = self._committed.get(tp)
            if position is None:
                try:
                    position = await asyncio.wait_for(self._consumer.committed(tp), 5) or 0
                except (KafkaError, TimeoutError):
                    continue
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )

    # -- rebalance -------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight finish and commit while the partitions are still ours.
        async with self._batch_lock:
            pass
        tasks = [self._tick_tasks.pop(tp) for tp in revoked if tp in self._tick_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tp in revoked:
            self._committed.pop(tp, None)
        self._metrics.rebalances.labels("revoked").inc()
        log.info(
            "partitions_revoked", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked)
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # A new generation starts clean: a fault seen before it is raised again if it lasts.
        self._health.backing_off = False
        self._health.joined_group = True
        self._metrics.rebalances.labels("assigned").inc()
        self._health.assigned_partitions = len(self._consumer.assignment())
        self._metrics.assigned_partitions.set(self._health.assigned_partitions)
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
        )


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those still running each second:
    on Python 3.11 ``asyncio.wait_for`` (used by the periodic jobs) can lose a cancellation
    that arrives as its inner call finishes, and one lost cancel must not hold up shutdown."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=1.0)
    await asyncio.gather(*tasks, return_exceptions=True)  # retrieve their outcomes


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runner.on_assigned(assigned)
