"""The consume loop: fetch bounded batches, apply them, commit only what is durable.

Its decisions (commit, seek, pause, resume, apply one by one) are made without I/O by
:class:`consumer.service.consume_plan.ConsumePlan`, which states the rules; this module
carries them out with aiokafka:

- ticket-used records are applied batch by batch, inline; their offsets are committed
  after the batch's MongoDB writes and status-change events are durable/published;
- a tick partition's records run in a background task while that partition is paused, so
  a long sweep never holds up polling (no ``max_poll_interval_ms`` overrun); its offset is
  committed when the sweep finishes;
- every failure is decided by :func:`consumer.policy.decide`: *retry* (a dependency is
  away) and *pause* (an output refuses) seek the batch's partitions back to the batch start
  and back off, not ready, nothing committed or dead-lettered; *dead-letter* (an input at
  fault) re-applies the batch one record at a time, so only the records at fault go to the
  dead-letter topic: the loop never dies of one, and no input stops a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumer.adapters.metrics import Metrics
from consumer.errors import TransientError
from consumer.logs import get_logger
from consumer.policy import Action as PolicyAction
from consumer.policy import Path, decide
from consumer.service.background import BackgroundJobs, every
from consumer.service.backoff import Backoff
from consumer.service.checklog import CheckLogSink, IntervalSummary
from consumer.service.consume_plan import (
    Action,
    ApplyBatch,
    ApplyOneByOne,
    BackOff,
    Commit,
    ConsumePlan,
    Pause,
    Recovered,
    Resume,
    Seek,
    StartTicks,
)
from consumer.service.deadletter import input_record
from consumer.service.health import Health
from consumer.service.outbox import OutboxRelay
from consumer.service.retry import Retrier
from consumer.service.tick_tasks import TickTasks
from consumer.service.ticket_used import TicketUsedHandler
from consumer.service.ticks import TickHandler
from consumer.settings import Settings

log = get_logger(__name__)

_COMMIT_TIMEOUT_SECONDS = 30.0


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
        self._relay = relay
        self._sink = sink
        self._summary = summary
        self._health = health
        self._metrics = metrics
        self._probes = probes
        self._batch_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._tick_tasks = TickTasks(
            ticks,
            metrics,
            retrier=self._retrier,
            ended=lambda tp, offset: self._carry_out(self._plan.tick_ended(tp, offset), {}),
            stopped=lambda tp: self._carry_out(self._plan.ticks_stopped(tp), {}),
        )
        self._plan = ConsumePlan(settings.topic_ticket_used, settings.topic_tick)
        self._stop = asyncio.Event()
        self._consume = self._retrier("consume")

    def _retrier(self, source: str) -> Retrier:
        backoff = Backoff(
            self._settings.backoff_initial_seconds, self._settings.backoff_max_seconds
        )
        return Retrier(source, self._health, self._metrics, backoff, self._sleep)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish cleanly within the grace period."""
        self._stop = stop
        topics = [self._settings.topic_ticket_used, self._settings.topic_tick]
        self._consumer.subscribe(topics, listener=_Listener(self))
        await self._consumer.start()
        self._health.started = True
        jobs = BackgroundJobs(
            self._settings, self._consumer, self._relay, self._health, self._metrics
        )

        async def observe() -> None:
            await jobs.observe(self._probes, self._plan)

        background = [
            asyncio.create_task(
                every(self._settings.check_log_interval_seconds, self._flush_summary)
            ),
            asyncio.create_task(
                every(self._settings.outbox_relay_interval_seconds, jobs.relay_orphans)
            ),
            asyncio.create_task(
                every(self._settings.outbox_watermark_interval_seconds, jobs.keep_watermark)
            ),
            asyncio.create_task(every(5.0, observe)),
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
            await self._tick_tasks.finish(grace * 0.6)
            await _cancel_all(background)
            with contextlib.suppress(TransientError, TimeoutError):
                await asyncio.wait_for(self._flush_summary(), grace * 0.1)
        finally:
            await self._consumer.stop()  # leaves the group
            log.info("consumer_stopped")

    async def _poll_once(self) -> None:
        try:
            with self._metrics.kafka_duration.labels("fetch").time():  # attempts, failed too
                batch = await self._consumer.getmany(
                    timeout_ms=self._settings.fetch_timeout_ms,
                    max_records=self._settings.max_batch_records,
                )
        except KafkaError as exc:
            self._metrics.kafka_errors.labels("fetch").inc()
            await self._consume.wait("fetch", decide(exc, Path.INPUT), exc)
            return
        self._health.joined_group = True
        if not batch:
            if self._consume.failing and not self._plan.backing_off:
                self._consume.succeeded()  # a fetch fault ended; no batch waits to retry
            return
        async with self._batch_lock:
            fault = await self._handle_batch(batch)
        if fault is not None:
            # Sleep outside the lock, so a rebalance is never held up by a back-off.
            await self._consume.wait("ticket_used_batch", decide(fault, Path.INPUT), fault)

    async def _handle_batch(self, batch: dict[TopicPartition, list[Any]]) -> Exception | None:
        """Apply a batch and commit it; on a fault to back off from, return it."""
        offsets = {tp: [m.offset for m in msgs] for tp, msgs in batch.items()}
        return await self._carry_out(self._plan.batch_fetched(offsets), batch)

    async def _carry_out(
        self, actions: list[Action], batch: dict[TopicPartition, list[Any]]
    ) -> Exception | None:
        """Carry out the plan's actions (and those they lead to), in order."""
        fault: Exception | None = None
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Pause):
                self._consumer.pause(action.partition)
            elif isinstance(action, Resume):
                if action.partition in self._consumer.assignment():
                    self._consumer.resume(action.partition)
            elif isinstance(action, StartTicks):
                self._tick_tasks.start(action.partition, batch[action.partition])
            elif isinstance(action, ApplyBatch | ApplyOneByOne):
                fault, more = await self._apply(action, batch)
                queue[:0] = more
            elif isinstance(action, Seek):
                self._consumer.seek(action.partition, action.offset)
            elif isinstance(action, Commit):
                await self._commit(dict(action.offsets))
            elif isinstance(action, BackOff):
                return fault
            elif isinstance(action, Recovered):
                self._recovered()
        return None

    async def _apply(
        self, action: ApplyBatch | ApplyOneByOne, batch: dict[TopicPartition, list[Any]]
    ) -> tuple[Exception | None, list[Action]]:
        started = asyncio.get_running_loop().time()
        records = [input_record(m) for tp in action.spans for m in batch[tp]]
        one_by_one = isinstance(action, ApplyOneByOne)
        self._metrics.batch_size.observe(len(records))
        try:
            if one_by_one:
                await self._ticket_used.handle_each(records)
            else:
                await self._ticket_used.handle(records)
        except Exception as exc:  # noqa: BLE001 - the policy decides; the plan carries it out
            decision = decide(exc, Path.INPUT)
            if decision.action is PolicyAction.DEAD_LETTER:
                log.warning(
                    "batch_failed",
                    error=repr(exc)[:300],
                    reason=decision.verdict.reason,
                    one_by_one=one_by_one,
                    partitions=sorted(f"{tp[0]}-{tp[1]}" for tp in action.spans),
                )
            return exc, self._plan.batch_failed(
                action.spans, decision.action, one_by_one=one_by_one
            )
        self._metrics.batch_duration.observe(asyncio.get_running_loop().time() - started)
        return None, self._plan.batch_applied(action.spans)

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
        self._plan.commit_succeeded(mine)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on shutdown; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    def _recovered(self) -> None:
        self._consume.succeeded()
        self._health.mongodb_ok = self._health.kafka_ok = True

    async def _flush_summary(self) -> None:
        # An interval not written (or not published) is kept and written again, as it
        # was, before later ones: stored once, never merged into a later interval.
        if len(self._summary):
            await self._summary.flush(self._sink)

    # -- rebalance -------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight finish and commit while the partitions are still ours.
        async with self._batch_lock:
            pass
        await self._tick_tasks.cancel(revoked)
        self._plan.partitions_revoked(list(revoked))
        self._metrics.rebalances.labels("revoked").inc()
        log.info(
            "partitions_revoked", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked)
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # A new generation starts clean: a fault seen before it is raised again if it lasts.
        self._consume.succeeded()
        self._health.joined_group = True
        self._plan.partitions_assigned(list(self._consumer.assignment()))
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
