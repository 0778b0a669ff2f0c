"""Kafka adapter: client construction with security settings, an idempotent publisher, and
topic checks. The consume loop itself lives in :mod:`consumer.service.runner`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.helpers import create_ssl_context

from consumer.adapters.metrics import Metrics
from consumer.errors import (
    BrokerUnavailableError,
    MissingTopicError,
    PublishRejectedError,
    RecordRejectedError,
)
from consumer.settings import Settings

# Marked non-retriable by aiokafka, yet they only say the broker is away right now.
_TRANSIENT_KAFKA_ERRORS = (KafkaConnectionError, KafkaTimeoutError)
# Refusals of a record for what it holds (not of the topic or the client).
_RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes


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
        try:
            # send() only enqueues; awaiting the futures waits for the acknowledgements,
            # so a whole batch shares the producer's request pipelining.
            futures = [await self._producer.send(r.topic, r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            self._metrics.kafka_errors.labels("publish").inc()
            if not exc.retriable and not isinstance(exc, _TRANSIENT_KAFKA_ERRORS):
                # Too large, not authorized...: retrying cannot help; an operator must act.
                if isinstance(exc, _RECORD_ERRORS):
                    raise RecordRejectedError(f"Kafka refused a record: {exc!r}") from exc
                raise PublishRejectedError(f"Kafka refused a record: {exc!r}") from exc
            raise BrokerUnavailableError(f"Kafka publish failed: {exc!r}") from exc
        finally:
            self._metrics.kafka_duration.labels("publish").observe(time.perf_counter() - started)


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
            "missing Kafka topics: " + ", ".join(missing) + " (create them, e.g. scripts/topics)"
        )
