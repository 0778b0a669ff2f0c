"""Tick events: ``due`` sweeps and ``full`` checks, requested by the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.adapters.kafka import Publisher, traceparent_of
from consumer.adapters.metrics import Metrics
from consumer.domain.events import Cause, CauseType, Tick, TickMode
from consumer.errors import InputError, TickFailedError, TransientError, UnknownUserError
from consumer.logs import get_logger
from consumer.parsing import parse_tick
from consumer.service.deadletter import InputRecord, dead_letter
from consumer.service.sweeps import Sweeper, SweepResult

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
        max_future: timedelta,
    ) -> None:
        self._sweeper = sweeper
        self._publisher = publisher
        self._metrics = metrics
        self._group_id = group_id
        self._dlq_topic = dead_letter_topic
        self._max_bytes = max_message_bytes
        self._max_future = max_future

    async def handle(self, record: InputRecord) -> SweepResult | None:
        """Run the sweep a tick asks for; dead-letter a bad tick, and a tick that failed
        with an unexpected error (counted as ``failed``). Transient errors propagate."""
        now = datetime.now(UTC)
        outcome = "dead_lettered"
        try:
            tick = parse_tick(record.value, self._max_bytes, now, self._max_future)
            result = await self.run(tick, traceparent_of(record.headers))
        except TransientError:
            raise
        except Exception as caught:
            exc = caught if isinstance(caught, InputError) else _failed(caught)
            if not isinstance(caught, InputError):
                outcome = "failed"
                log.exception(
                    "tick_failed",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
            self._metrics.events_consumed.labels(record.topic, outcome).inc()
            self._metrics.dead_letters.labels(exc.reason).inc()
            log.warning(
                "event_dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=exc.reason,
                message=str(exc)[:300],
            )
            await self._publisher.publish(
                [dead_letter(record, exc, now, self._group_id, self._dlq_topic)]
            )
            return None
        outcome = "applied" if result.documents_changed else "no_change"
        self._metrics.events_consumed.labels(record.topic, outcome).inc()
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


def _failed(error: Exception) -> TickFailedError:
    """An unexpected error, as the dead-letter error of its tick."""
    return TickFailedError(f"{type(error).__name__}: {error}")
