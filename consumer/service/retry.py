"""The one way a part of the service waits through a fault it retries or pauses for.

A :class:`Retrier` belongs to one part (the consume loop, one tick partition, the start):
it records that part's fault in :class:`~consumer.service.health.Health` under the part's
own name (so one part recovering never hides another still failing), backs off with
capped, jittered delays, counts the retry, raises ``pass_status_output_refused`` for the
topic an output refuses, and logs the first fault of an episode loudly and the rest as
retries. :meth:`Retrier.succeeded` ends the episode.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from consumer.adapters.metrics import Metrics
from consumer.logs import get_logger
from consumer.policy import Action, Decision
from consumer.service.backoff import Backoff
from consumer.service.health import Health

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[bool]]
"""Sleeps the given seconds; True if the service is stopping (wakes early then)."""


class Retrier:
    def __init__(
        self,
        source: str,
        health: Health,
        metrics: Metrics,
        backoff: Backoff,
        sleep: Sleep,
        *,
        event: str = "",
    ) -> None:
        self.source = source
        self._event = event  # the log event of every wait, when the part names its own
        self._health = health
        self._metrics = metrics
        self._backoff = backoff
        self._sleep = sleep
        self._refused_topics: set[str] = set()

    @property
    def failing(self) -> bool:
        return self._backoff.attempt > 0

    async def wait(
        self, operation: str, decision: Decision, error: BaseException, **context: object
    ) -> bool:
        """Record the fault, back off; True if the service is stopping."""
        verdict = decision.verdict
        description = f"{decision.action}: {verdict.reason}: {str(error)[:300]}"
        self._health.fault(self.source, description)
        self._metrics.retries.labels(operation).inc()
        self._metrics.failures.labels(operation, str(verdict.fault), str(decision.action)).inc()
        topic = getattr(error, "topic", "")
        if decision.action is Action.PAUSE and isinstance(topic, str) and topic:
            self._refused_topics.add(topic)
            self._metrics.output_refused.labels(topic).set(1)
        first = not self.failing
        delay = self._backoff.next_delay()
        fields = {
            "source": self.source,
            "operation": operation,
            "action": str(decision.action),
            "fault": str(verdict.fault),
            "reason": verdict.reason,
            "code": verdict.code,
            "delay_seconds": round(delay, 2),
            "attempt": self._backoff.attempt,
            "error": str(error)[:300],
            **context,
        }
        if decision.action is Action.PAUSE and first:
            log.error("consumption_paused", **fields)
        else:
            log.warning(self._event or ("transient_fault" if first else "retrying"), **fields)
        return await self._sleep(delay)

    def abandon(self) -> None:
        """The part stops without recovering (cancelled, stopping): drop its fault and
        gauges, which would otherwise keep the service not ready for ever."""
        self._health.cleared(self.source)
        for topic in self._refused_topics:
            self._metrics.output_refused.labels(topic).set(0)
        self._refused_topics.clear()
        self._backoff.reset()

    def succeeded(self) -> None:
        """The part works again: clear its fault, reset its back-off."""
        had_fault = self._health.cleared(self.source)
        if had_fault or self.failing:
            log.info("recovered", source=self.source, after_attempts=self._backoff.attempt)
        for topic in self._refused_topics:
            self._metrics.output_refused.labels(topic).set(0)
        self._refused_topics.clear()
        self._backoff.reset()
