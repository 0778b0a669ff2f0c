"""Tick events: ``due`` sweeps and ``full`` checks, requested by the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.adapters.kafka import Publisher, traceparent_of
from consumer.adapters.metrics import Metrics
from consumer.domain.events import Cause, CauseType, Tick, TickMode
from consumer.errors import UnknownUserError
from consumer.logs import get_logger
from consumer.parsing import parse_tick
from consumer.policy import Action, Fault, Path, decide
from consumer.service.deadletter import InputRecord, dead_letter
from consumer.service.sweeps import Sweeper, SweepResult
from consumer.settings import DEAD_LETTER_MAX_BYTES

log = get_logger(__name__)


class TickHandler:
    def __init__(
        self,
        sweeper: Sweeper,
        publisher: Publisher,
        metrics: Metrics,
        *,
        group_id: str,
        dead_letter_topic: str,
        max_message_bytes: int,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        max_future: timedelta,
    ) -> None:
        self._sweeper = sweeper
        self._publisher = publisher
        self._metrics = metrics
        self._group_id = group_id
        self._dlq_topic = dead_letter_topic
        self._max_bytes = max_message_bytes
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._max_future = max_future

    async def handle(self, record: InputRecord) -> SweepResult | None:
        """Run the sweep a tick asks for. A tick the failure policy says to dead-letter (bad
        input, or an unforeseen error: ``internal_error``) is dead-lettered and None
        returned; every other failure is raised, for the caller to retry or pause."""
        now = datetime.now(UTC)
        try:
            tick = parse_tick(record.value, self._max_bytes, now, self._max_future)
            result = await self.run(tick, traceparent_of(record.headers))
        except Exception as exc:
            decision = decide(exc, Path.INPUT)
            if decision.action is not Action.DEAD_LETTER:
                raise
            outcome = "dead_lettered"
            if decision.verdict.fault is Fault.BUG:
                outcome = "failed"
                log.exception(
                    "tick_failed",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
            reason = decision.verdict.reason
            log.warning(
                "event_dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=reason,
                message=str(exc)[:300],
            )
            # Published before it is counted: a refused dead letter raises, and the tick
            # is run again (uncommitted) instead of being passed over.
            await self._publisher.publish(
                [
                    dead_letter(
                        record,
                        exc,
                        now,
                        self._group_id,
                        self._dlq_topic,
                        max_bytes=self._dead_letter_max_bytes,
                    )
                ]
            )
            self._metrics.events_consumed.labels(record.topic, outcome).inc()
            self._metrics.dead_letters.labels(reason).inc()
            self._metrics.record_consumed(record.topic, record.partition, record.timestamp_ms)
            return None
        outcome = "applied" if result.documents_changed else "no_change"
        self._metrics.events_consumed.labels(record.topic, outcome).inc()
        self._metrics.record_consumed(record.topic, record.partition, record.timestamp_ms)
        return result

    async def run(self, tick: Tick, traceparent: str = "") -> SweepResult:
        """Run the sweep ``tick`` asks for (an unknown ``user_id`` is bad input)."""
        cause = Cause(CauseType.TICK, tick.event_id, traceparent)
        log.info(
            "tick_started",
            mode=str(tick.mode),
            tick_at=tick.tick_at.isoformat(),
            user_id=tick.user_id,
            apply=tick.apply,
            shard=tick.shard,
            shards=tick.shards,
            event_id=tick.event_id,
        )
        if tick.user_id is not None and await self._sweeper.store.find_user(tick.user_id) is None:
            raise UnknownUserError(f"no cache document for user_id {tick.user_id}")
        if tick.mode is TickMode.DUE:
            return await self._sweeper.due(
                tick.tick_at, tick.shard, tick.shards, tick.apply, cause, tick.user_id
            )
        return await self._sweeper.full(
            tick.user_id, tick.apply, tick.tick_at, cause, tick.shard, tick.shards
        )
