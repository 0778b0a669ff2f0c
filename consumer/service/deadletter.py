"""Dead-letter records: the raw input bytes and headers, where they came from, why they failed.

The dead letter keeps the input's headers twice: in its body (``headers``, base64 values,
so the JSON is self-contained for ``dead-letters list``) and as its own Kafka headers (so
trace context and producers' metadata follow it without decoding).

A dead letter always fits (issue 19): its whole record (key, value, headers and framing, as
the producer measures it) stays within a budget, ``PASS_STATUS_DEAD_LETTER_MAX_BYTES``
(never above the producer's request size). An input too large for that is *cut*: the dead
letter keeps a prefix of its value with the value's full length and SHA-256, the headers that
fit (in order), a key of at most :data:`KEY_KEEP_BYTES`, ``"truncated": true`` and the Kafka
header :data:`TRUNCATED_HEADER`. A cut dead letter cannot be replayed byte-exact, so
``dead-letters replay`` refuses it. Without this, a dead letter over the producer's limit was
refused by Kafka and its partition retried it for ever."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from consumer.adapters.kafka import Headers, OutRecord
from consumer.domain.times import format_instant
from consumer.errors import InputError
from consumer.policy import classify
from consumer.settings import DEAD_LETTER_MAX_BYTES, PRODUCER_MAX_REQUEST_BYTES

TRUNCATED_HEADER = "pass-status-dead-letter-truncated"
"""Kafka header set (value ``true``) on a dead letter that was cut to fit."""

KEY_KEEP_BYTES = 1024
"""A cut dead letter keeps at most this many bytes of the input's key (keys are user ids)."""

# An upper bound of the bytes a record adds to its key, value and headers in a batch of its
# own: batch header (61), record overhead (21), key, value and header-count varints (5 each).
RECORD_FRAMING_BYTES = 128
HEADER_FRAMING_BYTES = 10  # a header's name and value length varints (5 each)
CUT_MESSAGE_CHARS = 500  # the message of a cut dead letter (2000 otherwise)


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


def record_size(key: bytes | None, value: bytes, headers: Headers) -> int:
    """An upper bound of the bytes the producer counts for this record against its
    ``max_request_size`` (and the broker against ``max.message.bytes``) in a batch of its own."""
    return (
        RECORD_FRAMING_BYTES
        + len(key or b"")
        + len(value)
        + sum(_kafka_header_size(k, v) for k, v in headers)
    )


def dead_letter(
    record: InputRecord,
    error: BaseException,
    failed_at: datetime,
    group_id: str,
    topic: str,
    *,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> OutRecord:
    """The dead-letter record of ``record`` (schemas/dead-letter.v1.json), keyed as the input,
    of at most ``max_bytes`` (and the producer's request size) as :func:`record_size`
    counts it: whole if it fits, else cut (see the module's docstring)."""
    budget = min(max_bytes, PRODUCER_MAX_REQUEST_BYTES)
    verdict = classify(error)
    body: dict[str, Any] = {
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "source_timestamp_ms": record.timestamp_ms,
        "key_base64": _b64(record.key),
        "value_base64": None,  # set below: whole, or a prefix
        "value_length": None if record.value is None else len(record.value),
        "value_sha256": None if record.value is None else _sha256(record.value),
        "truncated": False,
        "reason": verdict.reason,
        "message": (str(error) if isinstance(error, InputError) else repr(error))[:2000],
        "failed_at": format_instant(failed_at),
        "consumer_group": group_id,
    }
    if verdict.code is not None:
        body["error_code"] = verdict.code  # the server's code (MongoDB's, say)
    if record.headers:
        body["headers"] = [_header_entry(k, v) for k, v in record.headers]
    # A value whose base64 alone is over the budget is cut without encoding it whole first.
    if _b64_length(len(record.value or b"")) <= budget:
        value = orjson.dumps({**body, "value_base64": _b64(record.value)})
        if record_size(record.key, value, record.headers) <= budget:
            return OutRecord(topic=topic, key=record.key, value=value, headers=record.headers)
    return _cut(record, body, budget, topic)


def _cut(record: InputRecord, whole: dict[str, Any], budget: int, topic: str) -> OutRecord:
    """``whole`` cut to ``budget``: the fixed fields first, then the headers in order that
    fit (leaving the value prefix at least half the room, or what it needs), then as long a
    prefix of the value as the rest allows."""
    body = {**whole, "truncated": True, "message": whole["message"][:CUT_MESSAGE_CHARS]}
    key = record.key
    if key is not None and len(key) > KEY_KEEP_BYTES:
        body |= {"key_length": len(key), "key_sha256": _sha256(key)}
        key = key[:KEY_KEEP_BYTES]
        body["key_base64"] = _b64(key)
    if record.value is not None:
        body["value_base64"] = ""
    if record.headers:
        # The most headers that can be dropped: the count only shrinks from here.
        body |= {"headers": [], "headers_dropped": len(record.headers)}
    flag: Headers = ((TRUNCATED_HEADER, b"true"),)
    room = budget - record_size(key, orjson.dumps(body), flag)
    if room < 0:
        raise ValueError(f"a dead letter's fixed fields do not fit in {budget} bytes")
    value_length = len(record.value or b"")
    header_room = room - min(_b64_length(value_length), room // 2)
    kept: list[tuple[str, bytes]] = []
    used = 0
    for name, data in record.headers:
        # In the body (one JSON entry and a comma) and as a Kafka header.
        cost = len(orjson.dumps(_header_entry(name, data))) + 1 + _kafka_header_size(name, data)
        if used + cost <= header_room:
            kept.append((name, data))
            used += cost
    if record.value is not None:
        prefix = record.value[: min(value_length, (room - used) // 4 * 3)]
        body["value_base64"] = _b64(prefix)
    if record.headers:
        body["headers"] = [_header_entry(k, v) for k, v in kept]
        body["headers_dropped"] = len(record.headers) - len(kept)
    return OutRecord(topic=topic, key=key, value=orjson.dumps(body), headers=(*kept, *flag))


def _header_entry(name: str, data: bytes | None) -> dict[str, str | None]:
    return {"key": name, "value_base64": _b64(data)}


def _kafka_header_size(name: str, data: bytes | None) -> int:
    return HEADER_FRAMING_BYTES + len(name.encode()) + len(data or b"")


def _b64_length(size: int) -> int:
    return -(-size // 3) * 4


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
