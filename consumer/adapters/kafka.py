"""Kafka adapter: client construction with security settings, an idempotent publisher, and
topic checks. The consume loop itself lives in :mod:`consumer.service.runner`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from consumer.adapters.metrics import Metrics
from consumer.errors import (
    BrokerUnavailableError,
    MissingTopicError,
    PassStatusError,
    PublishRejectedError,
    RecordRejectedError,
)
from consumer.logs import get_logger
from consumer.policy import Fault, classify
from consumer.policy_codes import KAFKA_PRODUCER_STATE_ERRORS
from consumer.settings import Settings

log = get_logger(__name__)

Headers = tuple[tuple[str, bytes], ...]
"""Kafka record headers, in order (names may repeat)."""

TRACE_HEADERS = ("traceparent", "tracestate")
"""W3C Trace Context headers: copied from an input to the records it causes."""


def trace_headers(headers: Headers) -> Headers:
    return tuple((k, v) for k, v in headers if k in TRACE_HEADERS)


def traceparent_of(headers: Headers) -> str:
    """The input's ``traceparent`` header as text ("" if absent or not ASCII)."""
    for key, value in headers:
        if key == "traceparent":
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return ""
    return ""


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()


class Publisher(Protocol):
    """Publishes records and returns once every one is acknowledged by the broker."""

    async def publish(self, records: Sequence[OutRecord]) -> None: ...


def connection_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap, TLS and SASL options shared by every client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        )
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent producer, acks from all in-sync replicas, small linger for batching."""
    return AIOKafkaProducer(
        client_id=f"{settings.client_id}-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
        request_timeout_ms=15000,
        **connection_options(settings),
    )


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Group consumer with manual commits only."""
    return AIOKafkaConsumer(
        client_id=f"{settings.client_id}-consumer",
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=settings.max_poll_interval_ms,
        # Time the group waits for members to finish their revoke callback (which lets the
        # batch in flight commit); aiokafka's default is only the session timeout.
        rebalance_timeout_ms=max(settings.session_timeout_ms, 60000),
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 3),
        fetch_max_wait_ms=settings.fetch_timeout_ms,
        isolation_level="read_committed",
        **connection_options(settings),
    )


class KafkaPublisher:
    """:class:`Publisher` over an :class:`AIOKafkaProducer`."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        metrics: Metrics,
        remake: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self._remake = remake
        self._in_flight: dict[object, float] = {}  # publish call -> when it started

    def waiting_seconds(self) -> float:
        """How long the oldest publish still in flight has waited for Kafka (0: none).

        Kafka answers a write in milliseconds; a write still waiting after seconds means
        the cluster cannot take it (fewer in-sync replicas than min.insync.replicas, no
        leader): the producer retries by itself, and the service is not ready meanwhile."""
        if not self._in_flight:
            return 0.0
        return time.monotonic() - min(self._in_flight.values())

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer in use (a new one after :meth:`_reset`)."""
        return self._producer

    async def _reset(self, cause: KafkaError) -> None:
        """Replace the producer: its idempotence sequence broke (a batch the broker refused
        leaves a gap, and every later send fails with OutOfOrderSequenceNumber)."""
        if self._remake is None:
            return
        old, self._producer = self._producer, self._remake()
        log.warning("producer_reset", error=repr(cause)[:300])
        with contextlib.suppress(KafkaError):
            await old.stop()
        await self._producer.start()

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if not records:
            return
        started = time.perf_counter()
        topic = records[0].topic
        # send() only enqueues (and refuses, itself, a record over max_request_size);
        # awaiting the futures waits for the acknowledgements, so a whole batch shares the
        # producer's request pipelining.
        futures: list[asyncio.Future[Any]] = []
        call = object()
        self._in_flight[call] = time.monotonic()
        try:
            try:
                for r in records:
                    # One by one, not extend(): the futures sent before a refusal are kept.
                    future = await self._producer.send(
                        r.topic, r.value, key=r.key, headers=list(r.headers)
                    )
                    futures.append(future)
            except KafkaError as exc:
                await asyncio.gather(*futures, return_exceptions=True)  # retrieve their ends
                raise await self._error(topic, exc, by_client=True) from exc
            try:
                await asyncio.gather(*futures)
            except KafkaError as exc:
                await asyncio.gather(*futures, return_exceptions=True)
                raise await self._error(topic, exc, by_client=False) from exc
        finally:
            del self._in_flight[call]
            self._metrics.kafka_duration.labels("publish").observe(time.perf_counter() - started)

    async def _error(self, topic: str, exc: KafkaError, *, by_client: bool) -> PassStatusError:
        self._metrics.kafka_errors.labels("publish").inc()
        error = publish_error(topic, exc, by_client=by_client)
        refused_by_broker = isinstance(error, PublishRejectedError) and not by_client
        if isinstance(exc, KAFKA_PRODUCER_STATE_ERRORS) or refused_by_broker:
            # A batch the broker refused leaves a gap in the idempotent sequence: every
            # later send to that partition would fail with OutOfOrderSequenceNumber.
            with contextlib.suppress(KafkaError):
                await self._reset(exc)
        if isinstance(error, BrokerUnavailableError) and await self._topic_missing(topic):
            # A deleted topic shows as a leader that never comes back: the cluster
            # itself, reachable, says the topic is gone. An operator must recreate it.
            error = PublishRejectedError(
                f"Kafka topic {topic} does not exist (publish failed: {exc!r})", topic=topic
            )
        return error

    async def _topic_missing(self, topic: str) -> bool:
        return await _topic_missing_in(self._producer, topic)


def publish_error(topic: str, exc: KafkaError, *, by_client: bool = False) -> PassStatusError:
    """A failed publish to ``topic`` as this package's error of the fault
    :func:`consumer.policy.classify` finds: the broker away (leader moving, timeout), the
    topic refusing us (not authorized, gone), or a record refused for what it holds.

    A record refused by our own producer (``by_client``: over ``max_request_size``, before
    it was sent) is that record's fault (:class:`RecordRejectedError`); refused by the
    broker, the topic's own limit is below what the service writes, which an operator
    must fix: a refusal of the topic (:class:`PublishRejectedError`), never set aside."""
    verdict = classify(exc)
    message = f"Kafka refused records for {topic} ({verdict.reason}): {exc!r}"
    if verdict.fault is Fault.RECORD_REFUSED and by_client:
        return RecordRejectedError(message, topic=topic)
    if verdict.fault is Fault.RECORD_REFUSED:
        return PublishRejectedError(message, topic=topic)
    if verdict.fault is Fault.OUTPUT_REFUSED:
        return PublishRejectedError(message, topic=topic)
    return BrokerUnavailableError(f"Kafka publish to {topic} failed: {exc!r}")


async def _topic_missing_in(producer: AIOKafkaProducer, topic: str) -> bool:
    """True only when fresh metadata from a reachable cluster lacks ``topic``."""
    try:
        updated = await asyncio.wait_for(producer.client.force_metadata_update(), 5)
    except (KafkaError, TimeoutError):
        return False
    return bool(updated) and topic not in producer.client.cluster.topics()


async def list_topics(settings: Settings) -> set[str]:
    """The names of the cluster's topics."""
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.client_id}-admin", **connection_options(settings)
    )
    try:
        await admin.start()
        return set(await admin.list_topics())
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot list Kafka topics: {exc!r}") from exc
    finally:
        await admin.close()


async def check_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Raise :class:`MissingTopicError` naming every configured topic that does not exist."""
    existing = await list_topics(settings)
    missing = [t for t in topics if t not in existing]
    if missing:
        raise MissingTopicError(
            "missing Kafka topics: "
            + ", ".join(missing)
            + " (create them to the spec: docs/operations.md, Topics; scripts/create_topics.py)"
        )


TopicRecord = tuple[str, int, int, bytes | None]


class TopicReader:
    """Reads a whole topic from its beginning up to the end offsets found when asked, with
    no consumer group (nothing committed, no rebalance): the dead-letter replay's source.

    One partition at a time, in batches of at most ``batch_records`` (and of what one fetch
    brings, ``max_partition_fetch_bytes``), so memory holds one batch whatever the topic's
    size. No overall time limit: a partition that makes no progress for ``idle_seconds``
    (a broker away, records unreadable) stops the read with :class:`BrokerUnavailableError`.
    """

    def __init__(
        self, settings: Settings, batch_records: int = 500, idle_seconds: float = 30.0
    ) -> None:
        self._settings = settings
        self._batch_records = batch_records
        self._idle = idle_seconds

    async def batches(self, topic: str) -> AsyncGenerator[list[TopicRecord], None]:
        partitions = await self._partitions(topic)
        consumer = AIOKafkaConsumer(
            client_id=f"{self._settings.client_id}-dead-letters",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **connection_options(self._settings),
        )
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                if ends[tp] <= begins[tp]:
                    continue
                consumer.assign([tp])  # fetch (and buffer) this partition only
                await consumer.seek_to_beginning(tp)
                async for batch in self._partition(consumer, tp, ends[tp]):
                    yield batch
        except KafkaError as exc:
            raise BrokerUnavailableError(f"cannot read topic {topic}: {exc!r}") from exc
        finally:
            await consumer.stop()

    async def _partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, end: int
    ) -> AsyncGenerator[list[TopicRecord], None]:
        position = await consumer.position(tp)
        progressed = time.monotonic()
        while position < end:
            fetched = await consumer.getmany(tp, timeout_ms=500, max_records=self._batch_records)
            records = [(m.topic, m.partition, m.offset, m.value) for m in fetched.get(tp, [])]
            if records:
                yield records
            # Transaction markers and compaction leave gaps: the position says where we are.
            now, moved_to = time.monotonic(), await consumer.position(tp)
            if moved_to > position:
                position, progressed = moved_to, now
            elif now - progressed > self._idle:
                raise BrokerUnavailableError(
                    f"cannot read topic {tp.topic}: partition {tp.partition} made no progress"
                    f" for {self._idle:g} s at offset {position} (end {end})"
                )

    async def _partitions(self, topic: str) -> list[int]:
        admin = AIOKafkaAdminClient(
            client_id=f"{self._settings.client_id}-admin", **connection_options(self._settings)
        )
        try:
            await admin.start()
            (described,) = await admin.describe_topics([topic])
        except KafkaError as exc:
            raise BrokerUnavailableError(f"cannot describe topic {topic}: {exc!r}") from exc
        finally:
            await admin.close()
        partitions = sorted(p["partition"] for p in described.get("partitions", []))
        if described.get("error_code") or not partitions:
            raise MissingTopicError(f"missing Kafka topic: {topic}")
        return partitions
