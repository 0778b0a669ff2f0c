"""Kafka adapter: client construction with security settings, an idempotent publisher, and
topic checks. The consume loop itself lives in :mod:`consumer.service.runner`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
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
from consumer.policy import Fault, classify
from consumer.settings import Settings

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

    def __init__(self, producer: AIOKafkaProducer, metrics: Metrics) -> None:
        self._producer = producer
        self._metrics = metrics

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if not records:
            return
        started = time.perf_counter()
        topic = records[0].topic
        # send() only enqueues (and refuses, itself, a record over max_request_size);
        # awaiting the futures waits for the acknowledgements, so a whole batch shares the
        # producer's request pipelining.
        futures: list[asyncio.Future[Any]] = []
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
            self._metrics.kafka_duration.labels("publish").observe(time.perf_counter() - started)

    async def _error(self, topic: str, exc: KafkaError, *, by_client: bool) -> PassStatusError:
        self._metrics.kafka_errors.labels("publish").inc()
        error = publish_error(topic, exc, by_client=by_client)
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


async def check_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Raise :class:`MissingTopicError` naming every configured topic that does not exist."""
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.client_id}-admin", **connection_options(settings)
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot list Kafka topics: {exc!r}") from exc
    finally:
        await admin.close()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise MissingTopicError(
            "missing Kafka topics: "
            + ", ".join(missing)
            + " (create them to the spec: docs/operations.md, Topics; scripts/create_topics.py)"
        )


class TopicReader:
    """Reads a whole topic from its beginning up to the end offsets found when asked, with
    no consumer group (nothing committed, no rebalance): the dead-letter replay's source."""

    def __init__(self, settings: Settings, timeout_seconds: float = 60.0) -> None:
        self._settings = settings
        self._timeout = timeout_seconds

    async def read_all(self, topic: str) -> list[tuple[str, int, int, bytes | None]]:
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
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            return await asyncio.wait_for(self._drain(consumer, ends), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailableError(f"cannot read topic {topic}: {exc!r}") from exc
        finally:
            await consumer.stop()

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

    async def _drain(
        self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> list[tuple[str, int, int, bytes | None]]:
        out: list[tuple[str, int, int, bytes | None]] = []
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for messages in batch.values():
                out.extend((m.topic, m.partition, m.offset, m.value) for m in messages)
            # Transaction markers and compaction leave gaps: the position says where we are.
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return out
