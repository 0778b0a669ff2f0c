"""Plan one read-modify-write of a user's cache document.

Given the document as read, the ticket-used events of that user in offset order, and the
instant of evaluation, compute everything the write must do: the ``first_use`` values to
set, the status transitions, the new ``next_check_at`` and the outbox events that are made
durable in the same write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consumer.domain.events import Cause, CauseType, TicketUsed, status_changed_event
from consumer.domain.outbox import (
    OUTBOX,
    OUTBOX_SINCE,
    REVISION,
    ConditionalChange,
    Relaying,
    as_read,
    conditional_write,
    pending_outbox,
)
from consumer.domain.rules import UserEvaluation, evaluate_user
from consumer.domain.sweep_log import SWEEP_LOG, SweepMark, recording, sweep_mark
from consumer.domain.ticket_used import FirstUseSet, apply_ticket_used
from consumer.domain.times import as_utc, truncate_to_milliseconds
from consumer.errors import InputError

NEXT_CHECK_AT = "next_check_at"
CHECKED_AT = "pass_status_checked_at"
# The token of the bulk write that last wrote the document: when fewer documents matched
# than a bulk sent, one read of its ``_id``s by this token tells which were written.
WRITE_STAMP = "pass_status_write"
# Stored as ``next_check_at`` when no pass changes by time alone (every pass terminal),
# rather than null: an index keeps null and missing under one key, so with nulls a due
# sweep's "next_check_at missing" branch (the refresher's contract) would examine every
# all-terminal user. With this date, that branch examines exactly the documents the
# refresher touched. A null written by an earlier version reads the same, and is
# rewritten as this date by the next evaluation.
NEVER_DUE = datetime(9999, 12, 31, tzinfo=UTC)

__all__ = [
    "CHECKED_AT",
    "NEVER_DUE",
    "NEXT_CHECK_AT",
    "OUTBOX",
    "OUTBOX_SINCE",
    "REVISION",
    "WRITE_STAMP",
    "RejectedEvent",
    "UserUpdate",
    "pending_outbox",
    "plan_user_update",
    "write_change",
]


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A ticket-used event that cannot be applied to the document (e.g. unknown pass)."""

    event: TicketUsed
    error: InputError


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """What one conditional write of a user's document must change."""

    user_id: int
    first_use_sets: tuple[FirstUseSet, ...]
    evaluation: UserEvaluation
    outbox: tuple[dict[str, Any], ...]
    rejected: tuple[RejectedEvent, ...]
    next_check_at: datetime | None
    writes_document: bool
    # Set for a full sweep's write: its transitions are recorded in the document with it.
    sweep: SweepMark | None = None
    # The relay that publishes what this write appends, and whether the outbox as read is
    # known published (consumer.domain.outbox.conditional_write).
    relaying: Relaying | None = None

    @property
    def transitions_count(self) -> int:
        return len(self.evaluation.transitions)


def _to_ms(instant: datetime | None) -> datetime | None:
    """BSON dates keep milliseconds; compare and store at that precision."""
    return None if instant is None else truncate_to_milliseconds(instant)


def plan_user_update(
    doc: Mapping[str, Any],
    events: Sequence[TicketUsed],
    now: datetime,
    default_cause: Cause,
    sweep_id: str | None = None,
    relaying: Relaying | None = None,
) -> UserUpdate:
    """Apply ``events`` in order, evaluate at ``now``, and describe the resulting write.

    The transition of a pass named by a ticket-used event is caused by that event; any
    other transition (an expiry noticed on the way) by ``default_cause``. A full sweep
    gives its ``sweep_id``: see :mod:`consumer.domain.sweep_log`.
    """
    working: Mapping[str, Any] = doc
    first_use_sets: list[FirstUseSet] = []
    rejected: list[RejectedEvent] = []
    cause_by_pass: dict[str, Cause] = {}
    for event in events:
        try:
            working, first_use = apply_ticket_used(working, event.pass_uuid, event.used_at)
        except InputError as exc:
            rejected.append(RejectedEvent(event, exc))
            continue
        cause_by_pass[event.pass_uuid] = Cause(
            CauseType.TICKET_USED, event.event_id, event.traceparent
        )
        if first_use is not None:
            first_use_sets.append(first_use)

    evaluation = evaluate_user(working, now)
    user_id = evaluation.user_id
    outbox = tuple(
        status_changed_event(user_id, t, now, cause_by_pass.get(t.pass_uuid, default_cause))
        for t in evaluation.transitions
    )
    next_check_at = _to_ms(evaluation.next_check_at)
    stored_next = doc.get(NEXT_CHECK_AT, _ABSENT)
    writes = (
        bool(first_use_sets or outbox)
        or stored_next is _ABSENT
        or CHECKED_AT not in doc  # never evaluated: due until marked
        or not _same_instant(stored_next, next_check_at)
    )
    return UserUpdate(
        user_id=user_id,
        first_use_sets=tuple(first_use_sets),
        evaluation=evaluation,
        outbox=outbox,
        rejected=tuple(rejected),
        next_check_at=next_check_at,
        writes_document=writes,
        sweep=None if sweep_id is None else sweep_mark(doc, sweep_id),
        relaying=relaying,
    )


_ABSENT = object()


def _same_instant(stored: object, computed: datetime | None) -> bool:
    """Whether the stored ``next_check_at`` already says ``computed`` (a legacy null
    does not: it is rewritten as :data:`NEVER_DUE`)."""
    if not isinstance(stored, datetime):
        return False
    return _to_ms(as_utc(stored)) == stored_next_check_at(computed)


def stored_next_check_at(next_check_at: datetime | None) -> datetime:
    """The ``next_check_at`` value to store: the instant, or :data:`NEVER_DUE`."""
    return NEVER_DUE if next_check_at is None else next_check_at


def write_change(
    read: Mapping[str, Any], update: UserUpdate, now: datetime, stamp: str | None = None
) -> ConditionalChange:
    """The conditional update that applies ``update`` to the document read as ``read``;
    a bulk's writes carry its ``stamp`` (:data:`WRITE_STAMP`)."""
    sets: dict[str, Any] = {
        NEXT_CHECK_AT: stored_next_check_at(update.next_check_at),
        CHECKED_AT: now,
    }
    if stamp is not None:
        sets[WRITE_STAMP] = stamp
    for first_use in update.first_use_sets:
        sets[f"passes.{first_use.index}.payload.first_use"] = first_use.first_use
    for transition in update.evaluation.transitions:
        sets[f"passes.{transition.index}.status"] = transition.to_status
    if update.sweep is None or not update.evaluation.transitions:
        return conditional_write(read, sets, update.outbox, update.relaying)
    # A full sweep records its transitions with them; the record is derived from the one
    # read, so the write is conditioned on it too.
    sets[SWEEP_LOG] = recording(read, update.sweep, update.evaluation.transitions)
    write = conditional_write(read, sets, update.outbox, update.relaying)
    condition = {**write.condition, **as_read(read, (SWEEP_LOG,))}
    return ConditionalChange(write.doc_id, condition, write.change)
