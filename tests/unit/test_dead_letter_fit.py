"""Dead letters always fit (issue 19): a dead letter never exceeds its budget, however large
the input's value, key or headers; past the budget it is cut (a prefix of the value, its full
length and SHA-256, the headers that fit) and says so; a replay refuses a cut one."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from consumer import schemas
from consumer.adapters.kafka import Headers, OutRecord
from consumer.errors import DocumentRejectedError, MessageTooLargeError, UnknownUserError
from consumer.replay import CutDeadLetterError, Selection, parse_dead_letter, replay_record, run
from consumer.service.deadletter import (
    KEY_KEEP_BYTES,
    TRUNCATED_HEADER,
    InputRecord,
    dead_letter,
    record_size,
)
from consumer.settings import DEAD_LETTER_MAX_BYTES, PRODUCER_MAX_REQUEST_BYTES
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 3, 1, 8, 15, 30, tzinfo=UTC)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa4ba902b7-01"
FLAG = (TRUNCATED_HEADER, b"true")
validate = schemas.validator(schemas.DEAD_LETTER)


def _letter(
    value: bytes | None,
    headers: Headers = (),
    key: bytes | None = b"42",
    budget: int = DEAD_LETTER_MAX_BYTES,
    offset: int = 1834,
) -> tuple[OutRecord, dict[str, Any]]:
    record = InputRecord("bytemark.ticket-used.v1", 2, offset, key, value, 1772352930120, headers)
    error = MessageTooLargeError(f"value is {len(value or b'')} bytes, limit 65536")
    out = dead_letter(record, error, NOW, "pass-status", "dlq", max_bytes=budget)
    body = orjson.loads(out.value)
    validate(body)
    return out, body


def _size(out: OutRecord) -> int:
    return record_size(out.key, out.value, out.headers)


def _batch_bytes(out: OutRecord) -> int:
    """The bytes of ``out`` alone in a record batch, as aiokafka encodes it for the broker."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 2**26)
    builder.append(0, int(time.time() * 1000), out.key, out.value, list(out.headers))
    return len(builder.build())


def _whole_limit(budget: int, headers: Headers = ()) -> int:
    """The largest value size whose dead letter is whole under ``budget``."""
    low, high = 0, budget
    while low < high:
        middle = (low + high + 1) // 2
        if _letter(b"v" * middle, headers, budget=budget)[1]["truncated"]:
            high = middle - 1
        else:
            low = middle
    return low


def test_a_small_input_gives_a_whole_dead_letter_with_its_length_and_sha256() -> None:
    value = b'{"event_id":"e-1","user_id":42}'
    out, body = _letter(value, (("traceparent", TRACEPARENT),))
    assert body["truncated"] is False
    assert base64.b64decode(body["value_base64"]) == value
    assert body["value_length"] == len(value)
    assert body["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert out.headers == (("traceparent", TRACEPARENT),)
    assert out.key == b"42"
    assert replay_record(parse_dead_letter(out.value, "dlq", 0, 1)).value == value


@pytest.mark.parametrize("budget", [16_384, 65_536, DEAD_LETTER_MAX_BYTES, 1_048_576])
def test_sizes_around_the_budget_are_whole_below_and_cut_above_never_over(budget: int) -> None:
    limit = _whole_limit(budget)
    for size in range(limit - 7, limit + 8):
        out, body = _letter(b"v" * size, budget=budget)
        assert _size(out) <= budget
        assert body["truncated"] is (size > limit)
        kept = base64.b64decode(body["value_base64"])
        assert b"v" * size == kept if size <= limit else len(kept) < size
        if body["truncated"]:
            # The cut uses the room: less than one base64 quantum (4 bytes) is left over.
            assert budget - _size(out) < 4
            assert out.headers == (FLAG,)


def test_a_5_mb_value_under_the_default_budget() -> None:
    value = bytes(range(256)) * 20_000
    out, body = _letter(value)
    assert _size(out) <= DEAD_LETTER_MAX_BYTES
    assert body["truncated"] is True
    assert body["value_length"] == len(value)
    assert body["value_sha256"] == hashlib.sha256(value).hexdigest()
    prefix = base64.b64decode(body["value_base64"])
    assert value.startswith(prefix)
    assert len(prefix) > DEAD_LETTER_MAX_BYTES * 0.7  # most of the budget holds the value
    assert out.headers == (FLAG,)
    assert "headers" not in body


def test_record_size_bounds_what_the_producer_and_the_broker_count() -> None:
    headers: Headers = (("traceparent", TRACEPARENT), ("x", b"\x00" * 300), ("é", b""))
    for value in (b"", b"{}", b"v" * 700_000, b"v" * 5_000_000):
        for key in (None, b"", b"42", b"k" * 5000):
            out, _ = _letter(value, headers, key)
            size = _size(out)
            estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes(
                out.key, out.value, list(out.headers)
            )
            assert estimate <= size  # the producer's max_request_size check
            assert _batch_bytes(out) <= size  # the broker's max.message.bytes check
            assert size <= DEAD_LETTER_MAX_BYTES


def test_headers_that_fit_are_kept_in_order_and_the_others_counted() -> None:
    headers: Headers = (
        ("traceparent", TRACEPARENT),
        ("padding", b"h" * 600_000),
        ("tracestate", b"vendor=1"),
    )
    out, body = _letter(b"v" * 2_000_000, headers)
    assert _size(out) <= DEAD_LETTER_MAX_BYTES
    assert out.headers == (headers[0], headers[2], FLAG)
    assert [h["key"] for h in body["headers"]] == ["traceparent", "tracestate"]
    assert body["headers_dropped"] == 1
    letter = parse_dead_letter(out.value, "dlq", 0, 9)
    assert letter.headers == (headers[0], headers[2])


@pytest.mark.parametrize("budget", range(65_536, 65_544))
def test_many_headers_some_dropped_stay_within_every_budget(budget: int) -> None:
    # 300 headers: their count (dropped or not) and framing must be counted to the byte.
    headers: Headers = tuple(
        (f"x-{i}", bytes([i % 256]) * (50 + 1000 * (i % 3))) for i in range(300)
    )
    out, body = _letter(b"v" * 5_000_000, headers, budget=budget)
    size = _size(out)
    assert size <= budget
    assert budget - size < 8  # the value takes the rest, to a base64 quantum and a comma
    assert body["headers_dropped"] >= 100
    assert len(body["value_base64"]) >= budget * 0.45  # headers never take the value's half
    assert len(body["headers"]) + body["headers_dropped"] == 300
    assert out.headers[:-1] == tuple(h for h in headers if h in set(out.headers))
    estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        out.key, out.value, list(out.headers)
    )
    assert estimate <= size
    assert _batch_bytes(out) <= size


def test_a_small_value_keeps_whole_while_headers_take_what_is_left() -> None:
    value = b'{"event_id":"e-2"}'
    headers: Headers = tuple((f"h{i}", bytes([65 + i]) * 150_000) for i in range(3))
    out, body = _letter(value, headers)
    assert _size(out) <= DEAD_LETTER_MAX_BYTES
    assert body["truncated"] is True
    assert base64.b64decode(body["value_base64"]) == value  # the value itself is whole
    assert out.headers == (headers[0], headers[1], FLAG)
    assert body["headers_dropped"] == 1


def test_a_huge_key_is_cut_with_its_length_and_sha256() -> None:
    key = b"k" * 2_000_000
    out, body = _letter(b"{}", key=key)
    assert _size(out) <= DEAD_LETTER_MAX_BYTES
    assert out.key == key[:KEY_KEEP_BYTES]
    assert base64.b64decode(body["key_base64"]) == key[:KEY_KEEP_BYTES]
    assert (body["key_length"], body["key_sha256"]) == (len(key), hashlib.sha256(key).hexdigest())
    assert body["truncated"] is True


def test_a_tombstone_with_huge_headers_stays_a_tombstone() -> None:
    out, body = _letter(None, (("big", b"b" * 2_000_000),))
    assert _size(out) <= DEAD_LETTER_MAX_BYTES
    assert body["value_base64"] is None
    assert body["value_length"] is None
    assert body["headers"] == []
    assert body["headers_dropped"] == 1


def test_the_budget_is_never_above_the_producer_request_size() -> None:
    out, _ = _letter(b"v" * 3_000_000, budget=10 * PRODUCER_MAX_REQUEST_BYTES)
    assert _size(out) <= PRODUCER_MAX_REQUEST_BYTES


def test_an_unknown_user_dead_letter_is_unchanged_but_for_the_new_fields() -> None:
    record = InputRecord("in", 0, 3, b"7", b'{"a":1}', None)
    body = orjson.loads(dead_letter(record, UnknownUserError("no user 7"), NOW, "g", "d").value)
    assert body["reason"] == "unknown_user"
    assert (body["value_length"], body["truncated"]) == (7, False)


_header = st.tuples(
    st.text(min_size=0, max_size=40),
    st.one_of(st.binary(max_size=64), st.integers(0, 1_500_000).map(lambda n: b"h" * n)),
)


@settings(max_examples=60, deadline=None)
@given(
    size=st.one_of(st.integers(0, 4096), st.integers(0, 6_000_000)),
    headers=st.lists(_header, max_size=6).map(tuple),
    key=st.one_of(st.none(), st.binary(max_size=40), st.integers(0, 50_000).map(b"k".__mul__)),
    budget=st.integers(16_384, 2 * PRODUCER_MAX_REQUEST_BYTES),
    message=st.text(max_size=3000),
    store_code=st.one_of(st.none(), st.integers(1, 2**31 - 1)),
)
def test_any_input_gives_a_dead_letter_within_budget_that_parses(
    size: int,
    headers: Headers,
    key: bytes | None,
    budget: int,
    message: str,
    store_code: int | None,
) -> None:
    value = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    record = InputRecord("in", 0, 5, key, value, None, headers)
    error: Exception = (
        UnknownUserError(message)
        if store_code is None
        else DocumentRejectedError(message, user_id=42, code=store_code)
    )
    out = dead_letter(record, error, NOW, "g", "dlq", max_bytes=budget)
    assert _size(out) <= min(budget, PRODUCER_MAX_REQUEST_BYTES)
    body = orjson.loads(out.value)
    validate(body)
    assert body.get("error_code") == store_code
    letter = parse_dead_letter(out.value, "dlq", 0, 1)
    assert value.startswith(letter.value or b"")
    assert (body["value_length"], body["value_sha256"]) == (
        size,
        hashlib.sha256(value).hexdigest(),
    )
    if letter.truncated:
        assert out.headers[-1] == FLAG
        assert set(out.headers[:-1]) <= set(headers)
        with pytest.raises(CutDeadLetterError, match="cannot be replayed byte-exact"):
            replay_record(letter)
    else:
        assert (letter.value, letter.headers, letter.key) == (value, headers, key)
        assert out.headers == headers


class _Source:
    def __init__(self, records: Sequence[OutRecord]) -> None:
        self.records = records

    async def batches(
        self, topic: str
    ) -> AsyncGenerator[Sequence[tuple[str, int, int, bytes | None]], None]:
        yield [(topic, 0, offset, r.value) for offset, r in enumerate(self.records)]


class _Publisher:
    def __init__(self) -> None:
        self.published: list[OutRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.published.extend(records)


async def test_replay_refuses_a_cut_dead_letter_and_list_shows_it_cut() -> None:
    whole, _ = _letter(b'{"small":1}')
    cut, _ = _letter(b"v" * 2_000_000, offset=1835)
    source, publisher = _Source([whole, cut]), _Publisher()

    async def lines_of(
        publisher: _Publisher | None, *, replay: bool, dry_run: bool
    ) -> tuple[list[dict[str, Any]], int]:
        lines: list[dict[str, Any]] = []
        outcome = await run(
            source, publisher, "dlq", Selection(), replay=replay, dry_run=dry_run, emit=lines.append
        )
        return lines, outcome.refused

    listed, refused = await lines_of(None, replay=False, dry_run=False)
    assert refused == 0
    assert [(line["action"], line["truncated"]) for line in listed] == [
        ("listed", False),
        ("listed", True),
    ]
    assert listed[1]["value_length"] == 2_000_000

    lines, refused = await lines_of(publisher, replay=True, dry_run=False)
    assert refused == 1
    assert [line["action"] for line in lines] == ["replayed", "refused"]
    assert "cannot be replayed byte-exact" in lines[1]["refused"]
    assert "of the value's 2000000 bytes" in lines[1]["refused"]
    assert [r.value for r in publisher.published] == [b'{"small":1}']

    dry, _ = await lines_of(None, replay=True, dry_run=True)
    assert [line["action"] for line in dry] == ["would_replay", "refused"]
