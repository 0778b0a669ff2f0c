"""Parse at the edge: record bytes → orjson → schema check → domain event, or an InputError.

Every failure is an :class:`consumer.errors.InputError` whose ``reason`` becomes the
dead-letter reason code.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from consumer import schemas
from consumer.domain.events import Tick, TicketUsed, TickMode
from consumer.domain.times import parse_instant
from consumer.errors import (
    MessageTooLargeError,
    NotJsonError,
    SchemaViolationError,
    TickTooFarInFutureError,
)


def _load(value: bytes | None, max_bytes: int) -> Any:
    if value is None:
        raise NotJsonError("record has no value (tombstone)")
    if len(value) > max_bytes:
        raise MessageTooLargeError(f"value is {len(value)} bytes, limit {max_bytes}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotJsonError(f"value is not UTF-8 JSON: {exc}") from None


def _validate(name: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SchemaViolationError(f"{name}: expected a JSON object, got {type(data).__name__}")
    try:
        checked: dict[str, Any] = schemas.validator(name)(data)
    except schemas.ValidationFailure as exc:
        raise SchemaViolationError(f"{name}: {exc}"[:500]) from None
    return checked


def parse_ticket_used(value: bytes | None, max_bytes: int) -> TicketUsed:
    data = _validate(schemas.TICKET_USED, _load(value, max_bytes))
    parse_instant(data["used_at"])  # raises UnreadableTimeError, quoting the value
    return TicketUsed(
        event_id=data["event_id"],
        user_id=data["user_id"],
        pass_uuid=data["pass_uuid"],
        used_at=data["used_at"],
    )


def parse_tick(value: bytes | None, max_bytes: int, now: datetime, max_future: timedelta) -> Tick:
    data = _validate(schemas.TICK, _load(value, max_bytes))
    tick_at = parse_instant(data["tick_at"])
    if tick_at - now > max_future:
        raise TickTooFarInFutureError(
            f"tick_at {data['tick_at']!r} is more than {max_future.total_seconds():.0f} s ahead"
        )
    shards = data.get("shards", 1)
    shard = data.get("shard", 0)
    if shard >= shards:
        raise SchemaViolationError(f"tick.v1: shard {shard} is not below shards {shards}")
    user_id = data.get("user_id") or None
    mode = TickMode(data["mode"])
    return Tick(
        event_id=data["event_id"],
        tick_at=tick_at,
        user_id=user_id,
        mode=mode,
        apply=data["apply"],
        shard=shard,
        shards=shards,
    )
