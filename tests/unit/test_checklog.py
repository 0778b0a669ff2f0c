"""Check-log documents have the old job's shape, sorted entries, and never exceed 16 MB."""

from __future__ import annotations

from datetime import UTC, datetime

import bson
import orjson
import pytest
from consumer.domain.checklog import (
    DEFAULT_MAX_BYTES,
    UserLog,
    bson_size,
    check_log_documents,
    fit_user_log,
    log_entry,
    user_log,
    user_log_bson_size,
    user_log_json_size,
)
from consumer.domain.rules import evaluate_user
from consumer.schemas import CHECK_LOG, validator

CHECK_TIME = datetime(2024, 6, 1, 12, 0, 0, 123_000, tzinfo=UTC)
CHECK_MS = 1717243200123


def test_user_log_lists_transitions_and_skips_in_pass_order() -> None:
    doc = {
        "user_id": 3,
        "passes": [
            {"pass_uuid": "a", "status": "USING", "payload": {"expiration": "2024-01-01"}},
            {"pass_uuid": "b", "status": "NEW", "payload": {}},
            {"pass_uuid": "c", "status": "USABLE", "payload": {"expiration": "2024-01-01"}},
        ],
    }
    log = user_log(evaluate_user(doc, CHECK_TIME))
    assert log == UserLog(
        user_id=3,
        invalid_list=(("a", "USING -> EXPIRED"), ("c", "USABLE -> EXPIRED")),
        skipped_list=(("b", "unknown status 'NEW'"),),
    )


def test_user_log_is_none_when_nothing_to_report() -> None:
    doc = {"user_id": 3, "passes": [{"pass_uuid": "a", "status": "EXPIRED"}]}
    assert user_log(evaluate_user(doc, CHECK_TIME)) is None


def test_one_document_for_all_users_in_the_old_jobs_shape() -> None:
    logs = [
        UserLog(20, (("p2", "USING -> EXPIRED"),), ()),
        UserLog(5, (), ((None, "pass is not an object"),)),
        UserLog(7, (), ()),  # nothing to report: left out
    ]
    (document,) = check_log_documents(CHECK_TIME, None, False, logs)
    assert document == {
        "_id": CHECK_MS,
        "check_userID": "all users",
        "editMode": False,
        "check_time": "2024-06-01T12:00:00.123Z",
        "log": [
            {
                "user_id": 5,
                "invalid_list": [],
                "skipped_list": [{"pass_uuid": None, "reason": "pass is not an object"}],
            },
            {
                "user_id": 20,
                "invalid_list": [{"pass_uuid": "p2", "status_log": "USING -> EXPIRED"}],
                "skipped_list": [],
            },
        ],
    }
    assert list(document) == ["_id", "check_userID", "editMode", "check_time", "log"]
    validator(CHECK_LOG)(document)


def test_a_single_user_check_names_the_user_and_edit_mode() -> None:
    (document,) = check_log_documents(CHECK_TIME, 20, True, [])
    assert document["check_userID"] == 20
    assert document["editMode"] is True
    assert document["log"] == []
    assert "part" not in document
    validator(CHECK_LOG)(document)


def _many_logs(users: int) -> list[UserLog]:
    return [
        UserLog(u, tuple((f"pass-{u}-{i}", "USABLE -> EXPIRED") for i in range(5)), ())
        for u in range(users, 0, -1)
    ]


def test_a_log_larger_than_the_limit_is_split_into_parts() -> None:
    logs = _many_logs(300)
    max_bytes = 20_000
    documents = check_log_documents(CHECK_TIME, None, True, logs, max_bytes=max_bytes)
    assert len(documents) > 2
    assert [d["part"] for d in documents] == list(range(1, len(documents) + 1))
    assert {d["parts"] for d in documents} == {len(documents)}
    assert [d["_id"] for d in documents] == [CHECK_MS + i for i in range(len(documents))]
    assert {d["check_time"] for d in documents} == {"2024-06-01T12:00:00.123Z"}
    user_ids = [e["user_id"] for d in documents for e in d["log"]]
    assert user_ids == list(range(1, 301))  # every user once, in order, across parts
    for document in documents:
        encoded = bson.encode(document)
        assert len(encoded) <= max_bytes
        validator(CHECK_LOG)(document)
    # greedy: each part but the last could not have taken the next entry
    assert len(bson.encode(documents[0])) > max_bytes - 500


def test_bson_size_is_exact() -> None:
    logs = [
        UserLog(2**40, (("ü-unicode", "USABLE -> USING"),), ((None, "reason é"),)),
        UserLog(-1, (), (("x", "r"),)),
    ]
    (document,) = check_log_documents(CHECK_TIME, 123, False, logs)
    assert bson_size(document) == len(bson.encode(document))
    with pytest.raises(TypeError):
        bson_size(1.5)


def test_an_entry_larger_than_the_limit_gets_a_document_of_its_own() -> None:
    big = UserLog(2, tuple((f"p{i}", "USABLE -> EXPIRED") for i in range(200)), ())
    logs = [UserLog(1, (("a", "USING -> EXPIRED"),), ()), big, UserLog(3, (("b", "x"),), ())]
    documents = check_log_documents(CHECK_TIME, None, False, logs, max_bytes=2_000)
    assert [[e["user_id"] for e in d["log"]] for d in documents] == [[1], [2], [3]]


def test_the_default_limit_leaves_a_margin_under_16_mib() -> None:
    assert DEFAULT_MAX_BYTES == 16 * 1024 * 1024 - 64 * 1024


@pytest.mark.parametrize(
    "log",
    [
        UserLog(1, (), ()),
        UserLog(2**31, (("a", "USABLE -> USING"),) * 11, ()),
        UserLog(-(2**31), (), ((None, "pass is not an object"), ("ü-é", "unknown status 'ñ'"))),
        UserLog(7, tuple((f"p{i}", "USING -> EXPIRED") for i in range(120)), ((None, ""),) * 3),
    ],
)
def test_the_fast_entry_size_equals_the_bson_encoding(log: UserLog) -> None:
    assert user_log_bson_size(log) == len(bson.encode(log_entry(log)))


CONTROL = "".join(chr(c) for c in range(32)) + '"\\ü€😀\x7f\u2028'


@pytest.mark.parametrize(
    "log",
    [
        UserLog(1, (), ()),
        UserLog(-(2**40), (("a", "USABLE -> USING"),) * 3, ((None, "x"),)),
        UserLog(9, ((CONTROL, CONTROL),), ((None, CONTROL * 3), ("p", ""))),
    ],
)
def test_the_entry_json_size_equals_the_encoded_json(log: UserLog) -> None:
    assert user_log_json_size(log) == len(orjson.dumps(log_entry(log)))


def test_parts_fit_the_budget_as_json_too() -> None:
    # Control characters take 1 byte in BSON and 6 escaped in JSON: sized by BSON alone,
    # the published copy was 3 times the budget.
    logs = [UserLog(i, (), ((f"p{i}", "\x01" * 200),)) for i in range(1, 301)]
    max_bytes = 20_000
    documents = check_log_documents(CHECK_TIME, None, True, logs, max_bytes=max_bytes)
    assert [e["user_id"] for d in documents for e in d["log"]] == list(range(1, 301))
    for document in documents:
        assert len(orjson.dumps(document)) <= max_bytes
        assert len(bson.encode(document)) <= max_bytes


def test_a_single_oversized_entry_is_truncated_with_a_marker() -> None:
    skipped = tuple((f"p{i}", "unknown status '" + "\x02" * 50 + "'") for i in range(12_000))
    big = UserLog(2, (("a", "USING -> EXPIRED"),), skipped)
    logs = [UserLog(1, (("b", "USING -> EXPIRED"),), ()), big]
    max_bytes = 50_000
    documents = check_log_documents(CHECK_TIME, None, False, logs, max_bytes=max_bytes)
    for document in documents:
        assert len(orjson.dumps(document)) <= max_bytes
        assert len(bson.encode(document)) <= max_bytes
        validator(CHECK_LOG)(document)
    entry = documents[-1]["log"][-1]
    assert entry["user_id"] == 2
    assert entry["invalid_list"] == [{"pass_uuid": "a", "status_log": "USING -> EXPIRED"}]
    kept = entry["skipped_list"][:-1]
    assert kept == [{"pass_uuid": u, "reason": r} for u, r in skipped[: len(kept)]]
    marker = entry["skipped_list"][-1]
    left_out = 12_000 - len(kept)
    assert marker["pass_uuid"] is None
    assert marker["reason"].startswith(f"log truncated: {left_out} of 12001 entries left out (")


def test_an_entry_that_fits_is_not_truncated() -> None:
    log = UserLog(1, (("a", "USING -> EXPIRED"),), ((None, "r"),))
    assert fit_user_log(log, 10_000) is log
