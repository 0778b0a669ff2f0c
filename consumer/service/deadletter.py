"""Dead-letter records: the raw input bytes and headers, where they came from, why they failed.

The dead letter keeps the input's headers twice: in its body (``headers``, base64 values,
so the JSON is self-contained for ``dead-letters list``) and as its own Kafka headers (so
trace context and producers' metadata follow it without decoding)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from consumer.adapters.kafka import Headers, OutRecord
from consumer.domain.times import format_instant
from consumer.errors import InputError
from consumer.policy import classify


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed record, independent of the Kafka client's types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Headers = ()


def input_record(message: Any) -> InputRecord:
    """An aiokafka ``ConsumerRecord`` as an :class:`InputRecord`."""
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=message.timestamp,
        headers=tuple(getattr(message, "headers", None) or ()),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def failure_reason(error: BaseException) -> str:
    """The dead-letter reason code of ``error``, as the failure policy reads it: an input
    error's own, ``store_rejected`` for a document MongoDB refuses, ``internal_error`` for
    an error no rule foresaw."""
    return classify(error).reason


def dead_letter(
    record: InputRecord, error: BaseException, failed_at: datetime, group_id: str, topic: str
) -> OutRecord:
    """The dead-letter record of ``record`` (schemas/dead-letter.v1.json), keyed as the input."""
    verdict = classify(error)
    body = {
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "source_timestamp_ms": record.timestamp_ms,
        "key_base64": _b64(record.key),
        "value_base64": _b64(record.value),
        "reason": verdict.reason,
        "message": (str(error) if isinstance(error, InputError) else repr(error))[:2000],
        "failed_at": format_instant(failed_at),
        "consumer_group": group_id,
    }
    if verdict.code is not None:
        body["error_code"] = verdict.code  # the server's code (MongoDB's, say)
    if record.headers:
        body["headers"] = [{"key": k, "value_base64": _b64(v)} for k, v in record.headers]
    return OutRecord(topic=topic, key=record.key, value=orjson.dumps(body), headers=record.headers)
