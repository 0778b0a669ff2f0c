"""The composition root: builds the service from one :class:`Settings` object.

Nothing else constructs clients or reads configuration; the CLI calls the three entry
points here: :func:`run_service`, :func:`publish_ticks` and :func:`run_full_check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from consumer import replay as _replay
from consumer.adapters.http import HttpServer
from consumer.adapters.kafka import (
    KafkaPublisher,
    OutRecord,
    TopicReader,
    check_topics,
    list_topics,
    make_consumer,
    make_producer,
)
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import Document, MongoCacheStore, make_client
from consumer.bootstrap import Parts, build_parts, build_runner
from consumer.domain.events import Cause, CauseType
from consumer.domain.times import format_instant
from consumer.errors import PassStatusError, TransientError
from consumer.logs import get_logger
from consumer.policy import Action, Path, decide
from consumer.redact import redact_uri
from consumer.service.backoff import Backoff
from consumer.service.checklog import CheckLogSink, Emit, IntervalSummary
from consumer.service.health import Health, watch_event_loop
from consumer.service.outbox import OutboxRelay
from consumer.service.retry import Retrier
from consumer.service.runner import Runner
from consumer.service.sweeps import Sweeper, SweepResult
from consumer.service.writer import UserWriter
from consumer.settings import Settings

log = get_logger(__name__)
# A write to Kafka still unacknowledged after this long makes the service not ready.
PUBLISH_WAIT_NOT_READY_S = 5.0


@dataclass(slots=True)
class Core:
    """The parts shared by the consumer and the one-shot commands: the service layer
    (:func:`consumer.bootstrap.build_parts`) over the real MongoDB and Kafka clients."""

    settings: Settings
    metrics: Metrics
    client: AsyncMongoClient[Document]
    store: MongoCacheStore
    publisher: KafkaPublisher
    parts: Parts

    @property
    def producer(self) -> AIOKafkaProducer:
        """The publisher's producer (made anew if its idempotence sequence broke)."""
        return self.publisher.producer

    @property
    def relay(self) -> OutboxRelay:
        return self.parts.relay

    @property
    def sink(self) -> CheckLogSink:
        return self.parts.sink

    @property
    def summary(self) -> IntervalSummary:
        return self.parts.summary

    @property
    def writer(self) -> UserWriter:
        return self.parts.writer

    @property
    def sweeper(self) -> Sweeper:
        return self.parts.sweeper


def output_topics(settings: Settings) -> list[str]:
    return [settings.topic_status_changed, settings.topic_check_log, settings.topic_dead_letter]


@contextlib.asynccontextmanager
async def core(
    settings: Settings, registry: CollectorRegistry | None = None
) -> AsyncIterator[Core]:
    metrics = Metrics(registry or CollectorRegistry())
    client = make_client(settings, metrics)
    store = MongoCacheStore(client, settings, metrics)
    publisher = KafkaPublisher(make_producer(settings), metrics, lambda: make_producer(settings))
    parts = build_parts(settings, store, publisher, metrics)
    try:
        yield Core(settings, metrics, client, store, publisher, parts)
    finally:
        # The source's last watermark: done if every relay was published.
        with contextlib.suppress(PassStatusError):
            await parts.relay.keep_watermark(datetime.now(UTC), final=True)
        with contextlib.suppress(KafkaError):
            await publisher.producer.stop()
        await client.close()


async def _start_producer(producer: AIOKafkaProducer) -> None:
    try:
        await producer.start()
    except KafkaError as exc:
        raise TransientError(f"cannot reach Kafka: {exc!r}") from exc


async def _until_up(settings: Settings, health: Health, stop: asyncio.Event, c: Core) -> bool:
    """Wait (backing off) until MongoDB and Kafka answer; False if stopped first. A failure
    the policy answers with *refuse to start* (a missing topic, a conflicting index, bad
    settings) is raised, for the command to exit 2 with its message."""
    retrier = Retrier(
        "start", health, c.metrics, _backoff(settings), _sleeper(stop), event="startup_waiting"
    )
    while not stop.is_set():
        try:
            await c.store.ping()
            health.mongodb_ok = True
            await check_topics(
                settings,
                [settings.topic_ticket_used, settings.topic_tick, *output_topics(settings)],
            )
            await c.store.ensure_indexes()
            await _start_producer(c.producer)
            health.kafka_ok = True
        except Exception as exc:
            decision = decide(exc, Path.START)
            if decision.action is not Action.RETRY:
                log.error(  # noqa: TRY400 - classified: the message says it all
                    "startup_refused", reason=decision.verdict.reason, error=str(exc)[:300]
                )
                raise
            if await retrier.wait("start", decision, exc):
                return False
            continue
        retrier.succeeded()
        return True
    return False


def _backoff(settings: Settings) -> Backoff:
    return Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)


def _sleeper(stop: asyncio.Event) -> Callable[[float], Awaitable[bool]]:
    async def sleep(seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    return sleep


def _cancel_on_signals() -> None:
    task = asyncio.current_task()
    if task is None:
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_service(settings: Settings) -> int:
    """``python -m consumer run``: consume until SIGTERM/SIGINT, then exit 0."""
    registry = CollectorRegistry()
    health = Health(max_stall_seconds=settings.liveness_max_stall_seconds)
    stop = asyncio.Event()
    _install_signals(stop)
    http = HttpServer(settings.http_host, settings.http_port, registry, health)
    log.info(
        "service_starting",
        kafka=settings.kafka_bootstrap_servers,
        mongodb=redact_uri(settings.mongodb_uri),
        database=settings.mongodb_database,
        group_id=settings.group_id,
    )
    async with core(settings, registry) as c:
        # Liveness from the first instant: waiting for the stores below keeps the loop
        # turning, so the pod is not restarted while a dependency is down.
        loop_watch = asyncio.create_task(watch_event_loop(health, c.metrics.event_loop_lag.observe))
        health.watch("event_loop_watch", loop_watch)
        await http.start()
        try:
            if not await _until_up(settings, health, stop, c):
                return 0
            runner = _build_runner(settings, c, health)
            run_task = asyncio.create_task(runner.run(stop))
            health.watch("consumer", run_task)
            await asyncio.wait(
                [run_task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            try:
                await asyncio.wait_for(asyncio.shield(run_task), settings.shutdown_grace_seconds)
            except TimeoutError:
                log.error("shutdown_grace_exceeded", grace_seconds=settings.shutdown_grace_seconds)  # noqa: TRY400 - no exception to show; the grace ran out
                run_task.cancel()
                # Let the cancelled loop run its finally (leave the group) briefly.
                with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                    await asyncio.wait_for(run_task, 5)
                return 1
        finally:
            health.stopping = True
            # Summaries the runner could not write before it stopped are lost: say so.
            c.summary.abandon()
            loop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_watch
            await http.stop()
    log.info("service_stopped")
    return 0


def _build_runner(settings: Settings, c: Core, health: Health) -> Runner:
    async def probes() -> tuple[bool, bool]:
        mongodb_ok = kafka_ok = True
        try:
            await asyncio.wait_for(c.store.ping(), 5)
        except (TransientError, TimeoutError):
            mongodb_ok = False
        try:
            await asyncio.wait_for(c.producer.client.fetch_all_metadata(), 5)
        except (KafkaError, TimeoutError):
            kafka_ok = False
        # Brokers answer, yet writes wait (NotEnoughReplicas while brokers are down): not ready.
        if c.publisher.waiting_seconds() > PUBLISH_WAIT_NOT_READY_S:
            kafka_ok = False
        return mongodb_ok, kafka_ok

    return build_runner(c.parts, make_consumer(settings), health, probes)


def tick_events(
    mode: str, user_id: int | None, apply: bool, shards: int, now: datetime
) -> list[tuple[bytes, dict[str, Any]]]:
    """The tick events one scheduler run publishes: one per shard for ``due``, else one."""
    base: dict[str, Any] = {"tick_at": format_instant(now), "mode": mode, "apply": apply}
    if user_id:
        base["user_id"] = user_id
    if mode == "due" and not user_id and shards > 1:
        return [
            (
                str(shard).encode(),
                {"event_id": str(uuid.uuid4()), **base, "shard": shard, "shards": shards},
            )
            for shard in range(shards)
        ]
    return [(str(user_id or 0).encode(), {"event_id": str(uuid.uuid4()), **base})]


async def publish_ticks(
    settings: Settings, mode: str, user_id: int | None, apply: bool
) -> list[dict[str, Any]]:
    """``python -m consumer tick``: publish the tick events and wait for their acks.

    SIGTERM or SIGINT cancels it (the producer is still closed): a CronJob's Job past its
    deadline stops at once instead of waiting for SIGKILL, as Python running as PID 1
    would otherwise ignore SIGTERM. The caller sees :class:`asyncio.CancelledError`.
    """
    _cancel_on_signals()
    events = tick_events(mode, user_id, apply, settings.tick_shards, datetime.now(UTC))
    metrics = Metrics(CollectorRegistry())
    producer = make_producer(settings)
    try:
        await _start_producer(producer)
        await KafkaPublisher(producer, metrics).publish(
            [OutRecord(settings.topic_tick, key, orjson.dumps(body)) for key, body in events]
        )
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()
    for _key, body in events:
        log.info("tick_published", topic=settings.topic_tick, **body)
    return [body for _key, body in events]


async def run_full_check(
    settings: Settings, user_id: int | None, apply: bool, emit: Emit | None = None
) -> SweepResult:
    """``python -m consumer check --user ID | --all``: the old job against MongoDB;
    ``emit`` gets each check-log part as it is written (never all of them at once)."""
    async with core(settings) as c:
        await _start_producer(c.producer)
        await c.store.ensure_indexes()
        cause = Cause(CauseType.CHECK, f"cli-{uuid.uuid4()}")
        return await c.sweeper.full(user_id, apply, datetime.now(UTC), cause, emit=emit)


async def dead_letters(
    settings: Settings,
    selection: _replay.Selection,
    *,
    replay: bool,
    dry_run: bool,
    emit: Emit,
) -> _replay.Outcome:
    """``python -m consumer dead-letters list|replay``: the chosen dead letters, one output
    line each to ``emit`` as they are done (streamed: memory holds one batch), re-published
    to their source topics when replaying for real. Raises :class:`ReplayRefusedError` when
    Kafka refuses a replay."""
    publishing = replay and not dry_run
    producer = make_producer(settings) if publishing else None
    publisher = None
    if producer is not None:
        kafka = KafkaPublisher(producer, Metrics(CollectorRegistry()))
        publisher = _replay.TopicCheckingPublisher(kafka, lambda: list_topics(settings))

    def unreadable(problem: str) -> None:
        log.warning("dead_letter_unreadable", detail=problem[:300])

    try:
        if producer is not None:
            await _start_producer(producer)
        outcome = await _replay.run(
            TopicReader(settings, batch_records=settings.max_batch_records),
            publisher,
            settings.topic_dead_letter,
            selection,
            replay=replay,
            dry_run=dry_run,
            emit=emit,
            unreadable=unreadable,
        )
    finally:
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
    log.info(
        "dead_letters_replayed" if publishing else "dead_letters_listed",
        topic=settings.topic_dead_letter,
        count=outcome.chosen,
        unreadable=outcome.unreadable,
        dry_run=dry_run,
    )
    return outcome
