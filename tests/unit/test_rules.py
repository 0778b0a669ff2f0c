"""The status rules table of DESIGN §3, row by row, with its boundaries and skipped cases."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from consumer.domain.rules import (
    TERMINAL_STATUSES,
    PassStatus,
    SkippedPass,
    Transition,
    apply_transitions,
    evaluate_user,
    read_int,
)
from consumer.errors import DocumentError

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PAST = "2024-06-01T11:00:00Z"
FUTURE = "2024-06-01T13:00:00Z"
USED = "2024-06-01T11:30:00Z"
MS = timedelta(milliseconds=1)


def a_pass(
    status: Any = "USABLE", expiration: Any = FUTURE, first_use: Any = None, uuid: Any = "p1"
) -> dict[str, Any]:
    return {
        "pass_uuid": uuid,
        "status": status,
        "timestamp": 1,
        "payload": {"uuid": uuid, "expiration": expiration, "first_use": first_use},
    }


def a_doc(*passes: Any, user_id: Any = 42) -> dict[str, Any]:
    return {"_id": "abc", "user_id": user_id, "timestamp": 7, "passes": list(passes)}


def outcome(p: dict[str, Any], now: datetime = NOW) -> tuple[str, str] | None:
    evaluation = evaluate_user(a_doc(p), now)
    assert evaluation.skipped == ()
    if not evaluation.transitions:
        return None
    (t,) = evaluation.transitions
    return t.to_status, t.status_log


@pytest.mark.parametrize(
    ("status", "expiration", "first_use", "expected"),
    [
        # USABLE, now >= expiration -> EXPIRED (with or without first_use)
        ("USABLE", PAST, None, ("EXPIRED", "USABLE -> EXPIRED")),
        ("USABLE", PAST, USED, ("EXPIRED", "USABLE -> EXPIRED")),
        # USABLE, not expired, first_use present -> USING (its value need not parse)
        ("USABLE", FUTURE, USED, ("USING", "USABLE -> USING")),
        ("USABLE", FUTURE, "not a time", ("USING", "USABLE -> USING")),
        ("USABLE", FUTURE, {"$date": USED}, ("USING", "USABLE -> USING")),
        ("USABLE", FUTURE, 0, ("USING", "USABLE -> USING")),
        # USABLE, not expired, no first_use (absent, null, empty, blank) -> unchanged
        ("USABLE", FUTURE, None, None),
        ("USABLE", FUTURE, "", None),
        ("USABLE", FUTURE, "   ", None),
        # USING, now >= expiration -> EXPIRED; not expired -> unchanged
        ("USING", PAST, USED, ("EXPIRED", "USING -> EXPIRED")),
        ("USING", PAST, None, ("EXPIRED", "USING -> EXPIRED")),
        ("USING", FUTURE, USED, None),
        ("USING", FUTURE, None, None),
        # terminal: always unchanged, never reported, even when expired or malformed
        ("EXPIRED", PAST, USED, None),
        ("EXPIRED", FUTURE, USED, None),
        ("EXPIRED", "garbage", None, None),
        ("USES_GONE", PAST, None, None),
        ("USES_GONE", FUTURE, USED, None),
        ("USES_GONE", None, None, None),
    ],
)
def test_rules_table(
    status: str, expiration: Any, first_use: Any, expected: tuple[str, str] | None
) -> None:
    assert outcome(a_pass(status, expiration, first_use)) == expected


def test_absent_first_use_key_is_no_first_use() -> None:
    p = a_pass("USABLE", FUTURE)
    del p["payload"]["first_use"]
    assert outcome(p) is None


@pytest.mark.parametrize("status", ["USABLE", "USING"])
def test_expiration_equal_to_now_is_expired_and_one_ms_before_is_not(status: str) -> None:
    at_now = a_pass(status, NOW.isoformat())
    assert outcome(at_now) == ("EXPIRED", f"{status} -> EXPIRED")
    assert outcome(at_now, NOW - MS) is None


def test_expiration_one_ms_after_now_is_not_expired() -> None:
    expiration = (NOW + MS).isoformat(timespec="milliseconds")
    assert outcome(a_pass("USING", expiration)) is None
    assert outcome(a_pass("USING", expiration), NOW + MS) == ("EXPIRED", "USING -> EXPIRED")


@pytest.mark.parametrize(
    ("expiration", "expired"),
    [
        # the same wall-clock time, but the zone puts the instant before or after now
        ("2024-06-01T12:30:00+01:00", True),  # 11:30Z
        ("2024-06-01T12:30:00-01:00", False),  # 13:30Z
        ("2024-06-01T13:00:00+0100", True),  # 12:00Z == now
        ("2024-06-01T11:59:59.999-00:00", True),
        ("2024-06-01T07:00:00-05", True),  # 12:00Z == now
        ("2024-06-01T07:00:01-05", False),  # 12:00:01Z
    ],
)
def test_zone_offsets_move_the_instant_across_now(expiration: str, expired: bool) -> None:
    result = outcome(a_pass("USABLE", expiration))
    assert (result is not None) is expired


@pytest.mark.parametrize(
    "expiration",
    [
        "2024-06-01 11:00:00",
        "2024-06-01T11:00Z",
        "2024-06-01",
        1717239600,  # 11:00Z in seconds
        1717239600000,  # in milliseconds
        {"$date": "2024-06-01T11:00:00Z"},
        {"$date": 1717239600000},
        {"$date": {"$numberLong": "1717239600000"}},
        {"$numberLong": "1717239600"},
        datetime(2024, 6, 1, 11, 0),  # noqa: DTZ001 - a naive BSON datetime means UTC
        datetime(2024, 6, 1, 11, 0, tzinfo=UTC),
    ],
)
def test_every_time_form_of_expiration_is_understood(expiration: Any) -> None:
    assert outcome(a_pass("USABLE", expiration)) == ("EXPIRED", "USABLE -> EXPIRED")


def test_transition_fields_and_effective_at() -> None:
    doc = a_doc(
        a_pass("USABLE", PAST, uuid="exp"),
        a_pass("USABLE", FUTURE, USED, uuid="use"),
        a_pass("USABLE", FUTURE, "garbled", uuid="use2"),
    )
    evaluation = evaluate_user(doc, NOW)
    assert evaluation.user_id == 42
    assert evaluation.now == NOW
    at_11, at_11_30 = datetime(2024, 6, 1, 11, tzinfo=UTC), datetime(2024, 6, 1, 11, 30, tzinfo=UTC)
    assert evaluation.transitions == (
        Transition(0, "exp", "USABLE", "EXPIRED", "USABLE -> EXPIRED", at_11),
        Transition(1, "use", "USABLE", "USING", "USABLE -> USING", at_11_30),
        Transition(2, "use2", "USABLE", "USING", "USABLE -> USING", NOW),  # unreadable: now
    )


def test_naive_now_is_taken_as_utc() -> None:
    evaluation = evaluate_user(a_doc(a_pass("USING", NOW.isoformat())), NOW.replace(tzinfo=None))
    assert evaluation.now == NOW
    assert [t.to_status for t in evaluation.transitions] == ["EXPIRED"]


@pytest.mark.parametrize(
    ("item", "skipped"),
    [
        ("not a pass", SkippedPass(0, None, "pass is not an object")),
        (None, SkippedPass(0, None, "pass is not an object")),
        (a_pass("FOO"), SkippedPass(0, "p1", "unknown status 'FOO'")),
        (a_pass("usable"), SkippedPass(0, "p1", "unknown status 'usable'")),
        (a_pass(None), SkippedPass(0, "p1", "unknown status None")),
        (a_pass(3), SkippedPass(0, "p1", "unknown status 3")),
        (a_pass(["USABLE"]), SkippedPass(0, "p1", "unknown status ['USABLE']")),
        ({"pass_uuid": "p1", "payload": {}}, SkippedPass(0, "p1", "missing status")),
        (a_pass(uuid=None), SkippedPass(0, None, "missing pass_uuid")),
        (a_pass(uuid=""), SkippedPass(0, None, "pass_uuid is not a non-empty string: ''")),
        (a_pass(uuid=5), SkippedPass(0, None, "pass_uuid is not a non-empty string: 5")),
        ({"pass_uuid": "p1", "status": "USABLE"}, SkippedPass(0, "p1", "missing payload")),
        (
            {"pass_uuid": "p1", "status": "USING", "payload": "x"},
            SkippedPass(0, "p1", "payload is not an object: 'x'"),
        ),
        (a_pass(expiration=None), SkippedPass(0, "p1", "missing expiration")),
        (
            a_pass(expiration="2024-13-45"),
            SkippedPass(0, "p1", "unreadable expiration '2024-13-45'"),
        ),
        (a_pass("USING", ""), SkippedPass(0, "p1", "unreadable expiration ''")),
        (a_pass(expiration=True), SkippedPass(0, "p1", "unreadable expiration True")),
        (
            a_pass(expiration={"$date": "soon"}),
            SkippedPass(0, "p1", "unreadable expiration {'$date': 'soon'}"),
        ),
    ],
)
def test_bad_passes_are_skipped_with_a_quoted_reason(item: Any, skipped: SkippedPass) -> None:
    evaluation = evaluate_user(a_doc(item), NOW)
    assert evaluation.transitions == ()
    assert evaluation.skipped == (skipped,)


def test_unknown_status_with_missing_uuid_reports_the_status() -> None:
    evaluation = evaluate_user(a_doc({"status": "FOO"}), NOW)
    assert evaluation.skipped == (SkippedPass(0, None, "unknown status 'FOO'"),)


def test_a_bad_pass_does_not_stop_the_others() -> None:
    doc = a_doc(
        a_pass("USABLE", PAST, uuid="a"),
        "junk",
        a_pass("USABLE", "bad date", uuid="b"),
        a_pass("USING", PAST, uuid="c"),
    )
    evaluation = evaluate_user(doc, NOW)
    assert [(t.index, t.pass_uuid) for t in evaluation.transitions] == [(0, "a"), (3, "c")]
    assert [(s.index, s.pass_uuid) for s in evaluation.skipped] == [(1, None), (2, "b")]


def test_a_duplicated_pass_uuid_skips_the_second_occurrence() -> None:
    doc = a_doc(a_pass("USABLE", PAST, uuid="d"), a_pass("USABLE", PAST, uuid="d"))
    evaluation = evaluate_user(doc, NOW)
    assert [t.index for t in evaluation.transitions] == [0]
    assert evaluation.skipped == (SkippedPass(1, "d", "duplicate pass_uuid 'd'"),)


def test_a_terminal_duplicate_is_not_reported_but_still_claims_the_uuid() -> None:
    doc = a_doc(a_pass("EXPIRED", PAST, uuid="d"), a_pass("USING", PAST, uuid="d"))
    evaluation = evaluate_user(doc, NOW)
    assert evaluation.transitions == ()
    assert evaluation.skipped == (SkippedPass(1, "d", "duplicate pass_uuid 'd'"),)
    doc = a_doc(a_pass("USING", PAST, uuid="d"), a_pass("USES_GONE", PAST, uuid="d"))
    evaluation = evaluate_user(doc, NOW)
    assert [t.index for t in evaluation.transitions] == [0]
    assert evaluation.skipped == ()


@pytest.mark.parametrize(
    ("passes", "skipped"),
    [
        ("oops", (SkippedPass(-1, None, "passes is not a list: 'oops'"),)),
        ({"0": {}}, (SkippedPass(-1, None, "passes is not a list: {'0': {}}"),)),
        (None, ()),
        ([], ()),
    ],
)
def test_passes_not_a_list(passes: Any, skipped: tuple[SkippedPass, ...]) -> None:
    evaluation = evaluate_user({"user_id": 1, "passes": passes}, NOW)
    assert evaluation.transitions == ()
    assert evaluation.skipped == skipped
    assert evaluation.next_check_at is None


def test_missing_passes_is_a_user_without_passes() -> None:
    evaluation = evaluate_user({"user_id": 1}, NOW)
    assert (evaluation.transitions, evaluation.skipped, evaluation.next_check_at) == ((), (), None)


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        (5, 5),
        ({"$numberInt": "5"}, 5),
        ({"$numberLong": "9007199254740993"}, 9007199254740993),
        # The Node.js driver stores integers as doubles: an integral double is the integer.
        (5.0, 5),
        ({"$numberDouble": "5.0"}, 5),
    ],
)
def test_user_id_plain_or_extended_json(user_id: Any, expected: int) -> None:
    assert evaluate_user(a_doc(user_id=user_id), NOW).user_id == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"passes": []}, "user_id is missing"),
        ({"user_id": None}, "user_id is not an integer: None"),
        ({"user_id": "5"}, "user_id is not an integer: '5'"),
        ({"user_id": True}, "user_id is not an integer: True"),
        ({"user_id": 5.5}, "user_id is not an integer: 5.5"),
        ({"user_id": float("nan")}, "user_id is not an integer: nan"),
        ({"user_id": float("inf")}, "user_id is not an integer: inf"),
        ({"user_id": {"$numberInt": "five"}}, "user_id is not an integer"),
        ({"user_id": {"$numberDouble": "5.5"}}, "user_id is not an integer"),
    ],
)
def test_unusable_user_id_is_a_document_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace("$", r"\$")):
        evaluate_user(doc, NOW)


def test_read_int_refuses_booleans_and_non_integers() -> None:
    assert read_int(True) is None
    assert read_int(1.5) is None
    assert read_int({"$numberInt": "3", "x": 1}) is None
    assert read_int(-3) == -3


def test_next_check_at_is_the_earliest_future_expiration_of_live_passes() -> None:
    doc = a_doc(
        a_pass("USABLE", "2024-06-01T15:00:00Z", uuid="a"),
        a_pass("USABLE", "2024-06-01T14:00:00Z", USED, uuid="b"),  # -> USING, still live
        a_pass("USING", "2024-06-01T16:00:00Z", uuid="c"),
        a_pass("USABLE", PAST, uuid="d"),  # -> EXPIRED: no longer pending
        a_pass("EXPIRED", "2024-06-01T12:30:00Z", uuid="e"),  # terminal: never pending
        a_pass("FOO", "2024-06-01T12:10:00Z", uuid="f"),  # skipped: not pending
        a_pass("USING", "2024-06-01T12:20:00Z", uuid="c"),  # duplicate: not pending
    )
    evaluation = evaluate_user(doc, NOW)
    assert evaluation.next_check_at == datetime(2024, 6, 1, 14, tzinfo=UTC)


def test_next_check_at_is_none_when_nothing_will_change_by_time() -> None:
    doc = a_doc(a_pass("USABLE", PAST, uuid="a"), a_pass("EXPIRED", FUTURE, uuid="b"))
    assert evaluate_user(doc, NOW).next_check_at is None


def test_apply_transitions_changes_only_statuses_and_never_mutates() -> None:
    doc = a_doc(
        a_pass("USABLE", PAST, uuid="a"),
        a_pass("USING", FUTURE, uuid="b"),
        a_pass("USABLE", FUTURE, USED, uuid="c"),
    )
    doc["passes4"] = [{"x": 1}]
    doc["unknown"] = {"nested": [1, 2]}
    before = copy.deepcopy(doc)
    evaluation = evaluate_user(doc, NOW)
    updated = apply_transitions(doc, evaluation.transitions)
    assert doc == before
    assert [p["status"] for p in updated["passes"]] == ["EXPIRED", "USING", "USING"]
    expected = copy.deepcopy(before)
    expected["passes"][0]["status"] = "EXPIRED"
    expected["passes"][2]["status"] = "USING"
    assert updated == expected
    assert updated["passes"][1] is doc["passes"][1]  # unchanged passes are shared, not copied
    assert evaluate_user(updated, NOW).transitions == ()


def test_apply_no_transitions_is_an_equal_copy() -> None:
    doc = a_doc(a_pass())
    updated = apply_transitions(doc, [])
    assert updated == doc
    assert updated is not doc


def test_apply_refuses_a_transition_computed_from_another_version() -> None:
    doc = a_doc(a_pass("USABLE", PAST, uuid="a"))
    (transition,) = evaluate_user(doc, NOW).transitions
    changed = a_doc(a_pass("USING", PAST, uuid="a"))
    with pytest.raises(DocumentError, match="does not match passes"):
        apply_transitions(changed, [transition])
    with pytest.raises(DocumentError, match="does not match passes"):
        apply_transitions(a_doc(), [transition])


def test_terminal_statuses_and_enum_values() -> None:
    assert frozenset({"EXPIRED", "USES_GONE"}) == TERMINAL_STATUSES
    assert [s.value for s in PassStatus] == ["USABLE", "USING", "EXPIRED", "USES_GONE"]


def test_a_decimal128_expiration_as_pymongo_decodes_it_is_read() -> None:
    # FerretDB 1.24 cannot store Decimal128, so the live path is checked here, on the
    # value pymongo hands the consumer for a {"$numberDecimal": ...} expiration.
    passes = [{"pass_uuid": "a", "status": "USABLE", "payload": {"expiration": Decimal128("1")}}]
    evaluation = evaluate_user({"user_id": 1, "passes": passes}, NOW)
    assert [t.status_log for t in evaluation.transitions] == ["USABLE -> EXPIRED"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42.0, 42),
        (-7.0, -7),
        ({"$numberDouble": "42.0"}, 42),
        (42.5, None),
        (float("nan"), None),
        (float("inf"), None),
        ({"$numberDouble": "Infinity"}, None),
    ],
    ids=str,
)
def test_integral_double_user_id_reads_as_the_integer_it_is(
    value: object, expected: int | None
) -> None:
    # The Node.js refresher stores every number as a double: 42.0 is user 42 wherever a
    # user_id is read (the rules, the sweeps' log entries), not only in evaluate_user.
    assert read_int(value) == expected
