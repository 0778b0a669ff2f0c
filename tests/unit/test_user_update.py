"""Planning one user's write: first_use, transitions, next_check_at and outbox, purely."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from consumer import schemas
from consumer.domain.events import Cause, CauseType, TicketUsed
from consumer.domain.ids import status_changed_event_id
from consumer.domain.user_update import (
    NEVER_DUE,
    pending_outbox,
    plan_user_update,
    write_change,
)

from tests.unit.fakes import STAMP

NOW = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
TICK = Cause(CauseType.TICK, "tick-1")


def a_pass(uuid: str, status: str, expiration: str, first_use: str | None = None) -> dict[str, Any]:
    return {
        "pass_uuid": uuid,
        "status": status,
        "payload": {"expiration": expiration, "first_use": first_use},
    }


def doc(*passes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"_id": "d1", "user_id": 7, "passes": list(passes), **extra}


def used(uuid: str, event_id: str = "ev-1") -> TicketUsed:
    return TicketUsed(event_id=event_id, user_id=7, pass_uuid=uuid, used_at="2026-03-01T07:59:00Z")


def test_ticket_used_sets_first_use_and_the_transition_is_caused_by_that_event() -> None:
    update = plan_user_update(
        doc(
            a_pass("a", "USABLE", "2026-03-02T00:00:00Z"),
            a_pass("b", "USING", "2026-03-01T07:00:00Z", "x"),
        ),
        [used("a")],
        NOW,
        TICK,
    )
    assert [(f.index, f.first_use) for f in update.first_use_sets] == [(0, "2026-03-01T07:59:00Z")]
    assert [(t.pass_uuid, t.status_log) for t in update.evaluation.transitions] == [
        ("a", "USABLE -> USING"),
        ("b", "USING -> EXPIRED"),
    ]
    causes = {e["pass_uuid"]: e["cause"] for e in update.outbox}
    assert causes == {
        "a": {"type": "ticket_used", "event_id": "ev-1"},
        "b": {"type": "tick", "event_id": "tick-1"},
    }
    validate = schemas.validator(schemas.PASS_STATUS_CHANGED)
    for event in update.outbox:
        validate(event)
        assert event["event_id"] == status_changed_event_id(
            7, event["pass_uuid"], event["to_status"]
        )
    assert update.next_check_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert update.writes_document


def test_duplicate_event_plans_no_write_once_the_document_is_current() -> None:
    current = doc(
        a_pass("a", "USING", "2026-03-02T00:00:00Z", "2026-03-01T07:59:00Z"),
        next_check_at=datetime(2026, 3, 2, tzinfo=UTC),
        pass_status_checked_at=NOW,
    )
    update = plan_user_update(current, [used("a")], NOW, TICK)
    assert update.first_use_sets == ()
    assert update.outbox == ()
    assert not update.writes_document


def test_a_never_evaluated_document_is_written_to_record_next_check_at() -> None:
    update = plan_user_update(doc(a_pass("a", "USABLE", "2026-03-02T00:00:00Z")), [], NOW, TICK)
    assert update.outbox == ()
    assert update.writes_document
    assert update.next_check_at == datetime(2026, 3, 2, tzinfo=UTC)


def test_a_document_with_next_check_at_but_never_evaluated_is_written_to_mark_it() -> None:
    # Without the write it stays "never evaluated", so every due sweep would read it.
    current = doc(
        a_pass("a", "USABLE", "2026-03-02T00:00:00Z"),
        next_check_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    update = plan_user_update(current, [], NOW, TICK)
    assert update.writes_document
    assert write_change(current, update, NOW).change["$set"]["pass_status_checked_at"] == NOW


def test_a_user_whose_passes_are_all_terminal_is_stored_as_never_due() -> None:
    expired = a_pass("a", "EXPIRED", "2026-02-01T00:00:00Z")
    update = plan_user_update(doc(expired), [], NOW, TICK)
    assert update.next_check_at is None
    assert write_change(doc(expired), update, NOW).change["$set"]["next_check_at"] == NEVER_DUE
    evaluated = {"pass_status_checked_at": NOW}
    current = doc(expired, next_check_at=NEVER_DUE, **evaluated)
    assert not plan_user_update(current, [], NOW, TICK).writes_document
    # A null written by an earlier version is rewritten once, as the date.
    legacy = doc(expired, next_check_at=None, **evaluated)
    assert plan_user_update(legacy, [], NOW, TICK).writes_document


def test_next_check_at_is_kept_at_millisecond_precision() -> None:
    update = plan_user_update(
        doc(a_pass("a", "USABLE", "2026-03-02T00:00:00.987654Z")), [], NOW, TICK
    )
    assert update.next_check_at == datetime(2026, 3, 2, 0, 0, 0, 987000, tzinfo=UTC)


def test_unknown_pass_is_rejected_and_the_other_events_still_apply() -> None:
    update = plan_user_update(
        doc(a_pass("a", "USABLE", "2026-03-02T00:00:00Z")),
        [used("zzz", "ev-0"), used("a", "ev-1")],
        NOW,
        TICK,
    )
    assert [(r.event.event_id, r.error.reason) for r in update.rejected] == [
        ("ev-0", "unknown_pass")
    ]
    assert [t.status_log for t in update.evaluation.transitions] == ["USABLE -> USING"]


def test_pending_outbox_reads_only_well_formed_entries() -> None:
    entries = [{"event_id": "a"}, {"no_id": 1}, "junk", {"event_id": 5}]
    assert pending_outbox({"pass_status_outbox": entries}) == [{"event_id": "a"}]
    assert pending_outbox({"pass_status_outbox": "junk"}) == []
    assert pending_outbox({}) == []


def test_a_write_names_the_user_id_as_read_so_a_sharded_cluster_targets_one_shard() -> None:
    read = doc(a_pass("a", "USABLE", "2026-03-01T07:00:00Z"))
    update = plan_user_update(read, [], NOW, TICK, relaying=STAMP)
    write = write_change(read, update, NOW)
    assert write.doc_id == "d1"
    assert write.condition["user_id"] == 7
    assert write.condition["passes"] == read["passes"]
