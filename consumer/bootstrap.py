"""The wiring of the service layer, written once: the composition root
(:mod:`consumer.app`) gives it the real adapters, the unit tests their fakes
(``tests/unit/fakes.py``), so both run the same objects joined the same way.

:func:`build_parts` joins the service layer to a store, a publisher and metrics;
:func:`build_runner` adds the consume loop over a Kafka consumer (or a stand-in).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consumer.adapters.kafka import Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import CacheStore
from consumer.service.checklog import CheckLogSink, IntervalSummary
from consumer.service.health import Health
from consumer.service.outbox import OutboxRelay
from consumer.service.relay_ledger import RelayLedger
from consumer.service.runner import Runner
from consumer.service.sweeps import Sweeper
from consumer.service.ticket_used import TicketUsedHandler
from consumer.service.ticks import TickHandler
from consumer.service.writer import UserWriter
from consumer.settings import Settings

Probes = Callable[[], Awaitable[tuple[bool, bool]]]
"""Answers (MongoDB reachable, Kafka reachable) for the health gauges."""


@dataclass(frozen=True, slots=True)
class Parts:
    """The service layer: every handler, joined to one store and one publisher."""

    settings: Settings
    metrics: Metrics
    store: CacheStore
    publisher: Publisher
    relay: OutboxRelay
    sink: CheckLogSink
    summary: IntervalSummary
    writer: UserWriter
    sweeper: Sweeper
    ticket_used: TicketUsedHandler
    ticks: TickHandler


def build_parts(
    settings: Settings, store: CacheStore, publisher: Publisher, metrics: Metrics
) -> Parts:
    # This process is one relay source, numbered when it registers (consumer.domain.watermarks).
    ledger = RelayLedger()
    relay = OutboxRelay(
        store,
        publisher,
        metrics,
        settings.topic_status_changed,
        ledger,
        socket.gethostname(),
        settings.outbox_watermark_interval_seconds,
    )
    sink = CheckLogSink(
        store, publisher, metrics, settings.topic_check_log, settings.check_log_max_bytes
    )
    summary = IntervalSummary(settings.check_log_max_pending_intervals, metrics)
    writer = UserWriter(store, metrics, settings.conflict_retries, ledger)
    sweeper = Sweeper(
        store,
        writer,
        relay,
        sink,
        summary,
        metrics,
        settings.user_concurrency,
        checkpoint_users=settings.sweep_batch_size,
    )
    ticket_used = TicketUsedHandler(
        store,
        writer,
        relay,
        publisher,
        summary,
        metrics,
        group_id=settings.group_id,
        dead_letter_topic=settings.topic_dead_letter,
        max_message_bytes=settings.max_message_bytes,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        concurrency=settings.user_concurrency,
    )
    ticks = TickHandler(
        sweeper,
        publisher,
        metrics,
        group_id=settings.group_id,
        dead_letter_topic=settings.topic_dead_letter,
        max_message_bytes=settings.max_message_bytes,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        max_future=timedelta(seconds=settings.tick_max_future_seconds),
    )
    return Parts(
        settings,
        metrics,
        store,
        publisher,
        relay,
        sink,
        summary,
        writer,
        sweeper,
        ticket_used,
        ticks,
    )


def build_runner(parts: Parts, consumer: Any, health: Health, probes: Probes) -> Runner:
    """The consume loop over ``consumer`` (an ``AIOKafkaConsumer``, or a stand-in)."""
    return Runner(
        parts.settings,
        consumer,
        parts.ticket_used,
        parts.ticks,
        parts.relay,
        parts.sink,
        parts.summary,
        health,
        parts.metrics,
        probes,
    )
