"""Domain events: what comes in (ticket-used, tick) and what goes out (pass-status-changed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from consumer.domain.ids import status_changed_event_id
from consumer.domain.rules import Transition
from consumer.domain.times import format_instant


class TickMode(StrEnum):
    DUE = "due"
    FULL = "full"


class CauseType(StrEnum):
    TICKET_USED = "ticket_used"
    TICK = "tick"
    CHECK = "check"


@dataclass(frozen=True, slots=True)
class TicketUsed:
    event_id: str
    user_id: int
    pass_uuid: str
    used_at: str
    traceparent: str = ""  # W3C trace context of the record (a header), carried to its effects


@dataclass(frozen=True, slots=True)
class Tick:
    event_id: str
    tick_at: datetime
    user_id: int | None  # None: all users
    mode: TickMode
    apply: bool
    shard: int
    shards: int


@dataclass(frozen=True, slots=True)
class Cause:
    type: CauseType
    event_id: str
    traceparent: str = ""  # the causing record's trace context; "" when it had none


def status_changed_event(
    user_id: int, transition: Transition, detected_at: datetime, cause: Cause
) -> dict[str, Any]:
    """The pass-status-changed event of one transition (schemas/pass-status-changed.v1.json),
    plus the cause's ``traceparent`` when there is one: it travels with the outbox entry and
    is published as a header, not in the event's body."""
    event: dict[str, Any] = {
        "event_id": status_changed_event_id(user_id, transition.pass_uuid, transition.to_status),
        "user_id": user_id,
        "pass_uuid": transition.pass_uuid,
        "from_status": transition.from_status,
        "to_status": transition.to_status,
        "status_log": transition.status_log,
        "effective_at": format_instant(transition.effective_at),
        "detected_at": format_instant(detected_at),
        "cause": {"type": str(cause.type), "event_id": cause.event_id},
    }
    if cause.traceparent:
        event["traceparent"] = cause.traceparent
    return event
