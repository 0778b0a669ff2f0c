"""Cache documents and events for tests, in the shapes of DESIGN §2 and §4."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.times import format_instant


def a_pass(
    status: str = "USABLE",
    expires_in: timedelta = timedelta(hours=1),
    first_use: str | None = None,
    now: datetime | None = None,
    pass_uuid: str | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    pass_uuid = pass_uuid or str(uuid.uuid4())
    return {
        "pass_uuid": pass_uuid,
        "status": status,
        "timestamp": 1700000000,
        "free_ticket_status": "none",
        "payload_hash": "h-" + pass_uuid[:8],
        "payload": {
            "uuid": pass_uuid,
            "status": status,
            "expiration": format_instant(now + expires_in),
            "first_use": first_use,
            "allowed_uses": 1,
            "uses_count": 0,
            "time_created": "2024-01-01T00:00:00.000Z",
            "vendor_extra": {"zone": "A", "fare": 2.75},
        },
        "unknown_pass_field": [1, "two", {"three": 3}],
    }


def a_user(user_id: int, passes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "timestamp": 1700000000,
        "passes": passes,
        "passes4": [{"legacy": True}],
        "passesLog": [],
        "passes4Log": [],
        "refresher_field": {"etag": "abc"},
        **extra,
    }


def ticket_used(user_id: int, pass_uuid: str, used_at: datetime | None = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user_id,
        "pass_uuid": pass_uuid,
        "used_at": format_instant(used_at or datetime.now(UTC)),
    }


def tick(mode: str = "due", at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "tick_at": format_instant(at or datetime.now(UTC)),
        "mode": mode,
        **extra,
    }
