"""The check-log document of DESIGN §2: what a check found, in the old job's shape.

Pure. A document never exceeds its budget, neither in MongoDB (BSON) nor as its Kafka copy
(JSON): the log is split into parts sized by the larger of the two encodings, both
computed exactly here (no bson or orjson import: the encodings of strings, integers,
booleans, arrays and objects are simple; a control character is 1 byte in BSON and up to
6 in JSON). One user's entry larger than a part on its own is cut (:func:`fit_user_log`),
with a marker saying how much was left out.

The split is planned from entry sizes alone (:func:`plan_parts`), so a caller that streams
millions of entries (the offline check) can plan in one pass and write in a second without
holding them all; :func:`check_log_documents` does both in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumer.domain.times import format_instant, unix_milliseconds

if TYPE_CHECKING:
    from datetime import datetime

    from consumer.domain.rules import UserEvaluation

ALL_USERS = "all users"
MONGODB_DOCUMENT_LIMIT = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = MONGODB_DOCUMENT_LIMIT - 64 * 1024

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# The largest part/parts values a header is budgeted for (int32, as pymongo encodes them).
_BUDGETED_PART = 2**31 - 1


@dataclass(frozen=True, slots=True)
class UserLog:
    """One user's entry: ``invalid_list`` of (pass_uuid, status_log), ``skipped_list`` of
    (pass_uuid or None, reason), each in the order of the ``passes`` array."""

    user_id: int
    invalid_list: tuple[tuple[str, str], ...]
    skipped_list: tuple[tuple[str | None, str], ...]


def user_log(evaluation: UserEvaluation) -> UserLog | None:
    """The check-log entry of an evaluation, or ``None`` when it has nothing to report."""
    if not evaluation.transitions and not evaluation.skipped:
        return None
    return UserLog(
        user_id=evaluation.user_id,
        invalid_list=tuple((t.pass_uuid, t.status_log) for t in evaluation.transitions),
        skipped_list=tuple((s.pass_uuid, s.reason) for s in evaluation.skipped),
    )


def log_entry(log: UserLog) -> dict[str, Any]:
    """The ``log`` array element of one user."""
    return {
        "user_id": log.user_id,
        "invalid_list": [
            {"pass_uuid": pass_uuid, "status_log": status_log}
            for pass_uuid, status_log in log.invalid_list
        ],
        "skipped_list": [
            {"pass_uuid": pass_uuid, "reason": reason} for pass_uuid, reason in log.skipped_list
        ],
    }


def check_log_header(
    check_time: datetime,
    check_user: int | None,
    edit_mode: bool,
    part: int | None = None,
    parts: int | None = None,
) -> dict[str, Any]:
    """Every field of a check-log document but ``log``, in the order they are written."""
    header: dict[str, Any] = {
        "_id": unix_milliseconds(check_time),
        "check_userID": ALL_USERS if check_user is None else check_user,
        "editMode": edit_mode,
        "check_time": format_instant(check_time),
    }
    if part is not None and parts is not None:
        header["part"] = part
        header["parts"] = parts
    return header


def bson_size(value: object) -> int:
    """Bytes of ``value`` encoded as a BSON *value* (a document for a mapping).

    Covers what check-log documents hold: str, int, bool, None, list and mapping.
    """
    if isinstance(value, Mapping):
        return 4 + sum(_element_size(str(k), v) for k, v in value.items()) + 1
    if isinstance(value, list | tuple):
        return 4 + sum(_element_size(str(i), v) for i, v in enumerate(value)) + 1
    if isinstance(value, str):
        return _string_size(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return _int_size(value)
    if value is None:
        return 0
    msg = f"no BSON size for {type(value).__name__}"
    raise TypeError(msg)


def _string_size(text: str) -> int:
    return 4 + len(text.encode()) + 1


def _int_size(value: int) -> int:
    return 4 if _INT32_MIN <= value <= _INT32_MAX else 8


def _key_size(key: str) -> int:
    return 1 + len(key) + 1  # type byte, key, NUL


def _pair_size(index: int, pass_uuid: str | None, key: str, text: str) -> int:
    """One ``{"pass_uuid": ..., key: text}`` element of an array, at position ``index``."""
    document = (
        4
        + _key_size("pass_uuid")
        + (0 if pass_uuid is None else _string_size(pass_uuid))  # null has no value bytes
        + _key_size(key)
        + _string_size(text)
        + 1
    )
    return _key_size(str(index)) + document


def user_log_bson_size(log: UserLog) -> int:
    """``bson_size(log_entry(log))``, computed without building the entry (it is hot)."""
    invalid = sum(
        _pair_size(i, uuid, "status_log", text) for i, (uuid, text) in enumerate(log.invalid_list)
    )
    skipped = sum(
        _pair_size(i, uuid, "reason", text) for i, (uuid, text) in enumerate(log.skipped_list)
    )
    return (
        4
        + _key_size("user_id")
        + _int_size(log.user_id)
        + _key_size("invalid_list")
        + (4 + invalid + 1)
        + _key_size("skipped_list")
        + (4 + skipped + 1)
        + 1
    )


def json_size(value: object) -> int:
    """Bytes of ``value`` as compact JSON (orjson's encoding: UTF-8, minimal escapes)."""
    if isinstance(value, Mapping):
        items = value.items()
        inner = sum(_json_string_size(str(k)) + 1 + json_size(v) for k, v in items)
        return 2 + inner + max(len(value) - 1, 0)
    if isinstance(value, list | tuple):
        return 2 + sum(json_size(v) for v in value) + max(len(value) - 1, 0)
    if isinstance(value, str):
        return _json_string_size(value)
    if isinstance(value, bool):
        return 4 if value else 5
    if isinstance(value, int):
        return len(str(value))
    if value is None:
        return 4
    msg = f"no JSON size for {type(value).__name__}"
    raise TypeError(msg)


_SHORT_ESCAPES = frozenset('"\\\b\f\n\r\t')
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _json_string_size(text: str) -> int:
    size = len(text.encode()) + 2
    for char in _NEEDS_ESCAPE.findall(text):
        size += 1 if char in _SHORT_ESCAPES else 5  # \n or \u0001
    return size


def _json_pair_size(pass_uuid: str | None, key: str, text: str) -> int:
    """``{"pass_uuid":...,"<key>":"<text>"}``."""
    uuid_size = 4 if pass_uuid is None else _json_string_size(pass_uuid)
    return 2 + 12 + uuid_size + 1 + len(key) + 3 + _json_string_size(text)


def user_log_json_size(log: UserLog) -> int:
    """``len(orjson.dumps(log_entry(log)))``, computed without building the entry."""
    invalid = sum(_json_pair_size(u, "status_log", t) for u, t in log.invalid_list)
    skipped = sum(_json_pair_size(u, "reason", t) for u, t in log.skipped_list)
    commas = max(len(log.invalid_list) - 1, 0) + max(len(log.skipped_list) - 1, 0)
    # The fixed parts: '{"user_id":' and ',"invalid_list":[' and '],"skipped_list":[' and ']}'.
    return 11 + len(str(log.user_id)) + 17 + invalid + 18 + skipped + 2 + commas


def user_log_size(log: UserLog) -> int:
    """The bytes an entry takes in a part: the larger of its BSON and JSON encodings."""
    return max(user_log_bson_size(log), user_log_json_size(log))


def fit_user_log(log: UserLog, max_bytes: int) -> UserLog:
    """``log`` itself if :func:`user_log_size` is at most ``max_bytes``; else ``log`` with
    its lists cut (invalid first, then skipped, in order) to the longest prefix that fits
    with a last ``skipped_list`` marker ``(None, "log truncated: N of M entries left out
    (B bytes)")``."""
    size = user_log_size(log)
    if size <= max_bytes:
        return log
    items = [*((True, i) for i in log.invalid_list), *((False, s) for s in log.skipped_list)]

    def cut(kept: int) -> UserLog:
        left = len(items) - kept
        marker = (None, f"log truncated: {left} of {len(items)} entries left out ({size} bytes)")
        invalid = tuple(i for is_invalid, i in items[:kept] if is_invalid)
        skipped = tuple(s for is_invalid, s in items[:kept] if not is_invalid)
        return UserLog(log.user_id, invalid, (*skipped, marker))  # type: ignore[arg-type]

    low, high = 0, len(items) - 1  # the most items kept that still fit (binary search)
    while low < high:
        middle = (low + high + 1) // 2
        if user_log_size(cut(middle)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return cut(low)


def _element_size(key: str, value: object) -> int:
    # type byte + key as a C string + the value
    return 1 + len(key.encode()) + 1 + bson_size(value)


def _log_element_size(index: int, entry_size: int) -> int:
    return 1 + len(str(index)) + 1 + entry_size


def header_budget(check_time: datetime, check_user: int | None, edit_mode: bool) -> int:
    """Bytes (the larger of BSON and JSON) of a check-log document with an empty ``log``
    and the largest part fields."""
    header = check_log_header(check_time, check_user, edit_mode, _BUDGETED_PART, _BUDGETED_PART)
    document = {**header, "log": []}
    return max(bson_size(document), json_size(document))


def max_entry_bytes(header_bytes: int, max_bytes: int) -> int:
    """The largest entry a part can hold alone (:func:`fit_user_log`'s budget)."""
    return max_bytes - header_bytes - _log_element_size(0, 0)


class PartPlanner:
    """:func:`plan_parts` one entry at a time (for callers that yield between entries)."""

    def __init__(self, header_bytes: int, max_bytes: int) -> None:
        self._header = header_bytes
        self._max = max_bytes
        self._used = header_bytes
        self._in_part = 0
        self._counts: list[int] = []

    def add(self, size: int) -> None:
        element = _log_element_size(self._in_part, size)
        if self._in_part and self._used + element > self._max:
            self._counts.append(self._in_part)
            self._used, self._in_part = self._header, 0
            element = _log_element_size(0, size)
        self._used += element
        self._in_part += 1

    def counts(self) -> list[int]:
        return [*self._counts, self._in_part]


def plan_parts(entry_sizes: Iterable[int], header_bytes: int, max_bytes: int) -> list[int]:
    """How many consecutive entries go into each document, in order (at least one document).

    ``entry_sizes`` are the :func:`user_log_size` of each log entry; ``header_bytes`` is
    :func:`header_budget`. Parts are filled greedily (a JSON comma is smaller than a BSON
    element's key, so the BSON element overhead bounds both). An entry too large for any document
    on its own still gets a document of its own (one user's entry is never cut).
    """
    planner = PartPlanner(header_bytes, max_bytes)
    for size in entry_sizes:
        planner.add(size)
    return planner.counts()


def check_log_documents(
    check_time: datetime,
    check_user: int | None,
    edit_mode: bool,
    logs: Iterable[UserLog],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[dict[str, Any]]:
    """The check-log document(s) of one check (DESIGN §2).

    ``_id`` is ``check_time`` in Unix milliseconds (the writer adds 1 on a collision),
    ``check_userID`` the user id or ``"all users"`` (``check_user`` None). ``log`` holds the
    users with at least one entry, sorted by ``user_id`` (stable: equal ids keep their
    order). When the log does not fit in ``max_bytes``, it is split into documents with
    ``part`` 1..n, ``parts`` n and consecutive ``_id``; a single document has neither field.
    """
    header_bytes = header_budget(check_time, check_user, edit_mode)
    largest = max_entry_bytes(header_bytes, max_bytes)
    ordered = sorted(
        (fit_user_log(log, largest) for log in logs if log.invalid_list or log.skipped_list),
        key=lambda log: log.user_id,
    )
    entries = [log_entry(log) for log in ordered]
    counts = plan_parts((user_log_size(log) for log in ordered), header_bytes, max_bytes)
    if len(counts) == 1:
        return [{**check_log_header(check_time, check_user, edit_mode), "log": entries}]
    documents: list[dict[str, Any]] = []
    start = 0
    for number, count in enumerate(counts, start=1):
        header = check_log_header(check_time, check_user, edit_mode, number, len(counts))
        header["_id"] += number - 1
        documents.append({**header, "log": entries[start : start + count]})
        start += count
    return documents
