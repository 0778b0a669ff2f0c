"""Every time form of DESIGN §3 reads to the right UTC instant; bad ones fail quoting the value."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128
from consumer.domain.times import (
    _parse_general,
    _parse_string,
    format_instant,
    parse_instant,
    quote,
    truncate_to_milliseconds,
    unix_milliseconds,
)
from consumer.errors import UnreadableTimeError
from hypothesis import given
from hypothesis import strategies as st

NOON = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NOON_MS = 1709294400000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # ISO 8601 / RFC 3339, T or space, with and without seconds and fraction
        ("2024-03-01T12:00:00Z", NOON),
        ("2024-03-01T12:00:00z", NOON),
        ("2024-03-01t12:00:00Z", NOON),
        ("2024-03-01 12:00:00Z", NOON),
        ("2024-03-01T12:00Z", NOON),
        ("2024-03-01T12:00", NOON),
        ("2024-03-01T12:00:00", NOON),
        ("2024-03-01T12:00:00.5Z", NOON.replace(microsecond=500_000)),
        ("2024-03-01T12:00:00.123Z", NOON.replace(microsecond=123_000)),
        ("2024-03-01T12:00:00,123Z", NOON.replace(microsecond=123_000)),
        ("2024-03-01T12:00:00.123456789Z", NOON.replace(microsecond=123_456)),
        # zones: ±HH:MM, ±HHMM, ±HH, UTC, GMT (with or without a space)
        ("2024-03-01T14:00:00+02:00", NOON),
        ("2024-03-01T14:00:00+0200", NOON),
        ("2024-03-01T14:00:00+02", NOON),
        ("2024-03-01T06:30:00-05:30", NOON),
        ("2024-03-01T06:30:00-0530", NOON),
        ("2024-03-01T12:00:00+00:00", NOON),
        ("2024-03-01T12:00:00-00:00", NOON),
        ("2024-03-01T12:00:00UTC", NOON),
        ("2024-03-01T12:00:00 UTC", NOON),
        ("2024-03-01 12:00:00 GMT", NOON),
        ("2024-03-01T12:00:00GMT", NOON),
        ("2024-03-01T14:00:00 +02:00", NOON),
        ("  2024-03-01T12:00:00Z  ", NOON),
        # an offset that moves the date
        ("2024-03-02T01:00:00+13:00", NOON),
        ("2024-02-29T23:00:00-13:00", NOON),
        # a date alone: midnight UTC
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        # Unix seconds, and milliseconds from 1e11 on
        (1709294400, NOON),
        (1709294400.25, NOON.replace(microsecond=250_000)),
        (NOON_MS, NOON),
        (float(NOON_MS), NOON),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (99_999_999_999, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=99_999_999_999)),
        (100_000_000_000, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=100_000_000)),
        # datetimes: aware, naive (= UTC, as pymongo without tz_aware), and dates
        (NOON, NOON),
        (NOON.replace(tzinfo=None), NOON),
        (datetime(2024, 3, 1, 14, tzinfo=timezone(timedelta(hours=2))), NOON),
        (date(2024, 3, 1), datetime(2024, 3, 1, tzinfo=UTC)),
        # Extended JSON dates: ISO string, int ms (always ms, even small), $numberLong
        ({"$date": "2024-03-01T12:00:00Z"}, NOON),
        ({"$date": "2024-03-01T12:00:00.000+00:00"}, NOON),
        ({"$date": NOON_MS}, NOON),
        ({"$date": 5000}, datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)),
        ({"$date": {"$numberLong": str(NOON_MS)}}, NOON),
        ({"$date": {"$numberLong": "-1000"}}, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
        # canonical Extended JSON numbers read as the plain numbers
        ({"$numberInt": "1709294400"}, NOON),
        ({"$numberLong": str(NOON_MS)}, NOON),
        ({"$numberDouble": "1709294400.0"}, NOON),
        ({"$numberDecimal": "1709294400"}, NOON),
    ],
)
def test_reads_every_form_as_the_same_utc_instant(value: object, expected: datetime) -> None:
    parsed = parse_instant(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "tomorrow",
        "2024-13-01T00:00:00Z",
        "2024-02-30",
        "2024-03-01T25:00:00Z",
        "2024-03-01T12:60:00Z",
        "2024-03-01T12:00:00+24:00",
        "2024-03-01T12:00:00+02:75",
        "2024-03-01T12:00:00 PST",
        "2024-03-01T12",
        "20240301",
        "1709294400",
        "2024-03-01T12:00:00ZZ",
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        10**30,
        [],
        {},
        {"$date": "not a date"},
        {"$date": True},
        {"$date": None},
        {"$date": {"$numberLong": "x"}},
        {"$date": "2024-03-01T12:00:00Z", "extra": 1},
        {"$numberLong": "12x"},
        {"$numberDouble": 5},
        {"expiration": "2024-03-01"},
    ],
)
def test_unreadable_values_raise_quoting_the_value(value: object) -> None:
    with pytest.raises(UnreadableTimeError) as raised:
        parse_instant(value)
    assert quote(value) in str(raised.value)


def test_a_long_bad_value_is_quoted_truncated() -> None:
    value = "x" * 500
    with pytest.raises(UnreadableTimeError) as raised:
        parse_instant(value)
    message = str(raised.value)
    assert len(message) < 150
    assert "'xxxxxxxx" in message
    assert "..." in message


def test_unreadable_time_is_an_input_error_for_the_dead_letter_topic() -> None:
    with pytest.raises(UnreadableTimeError) as raised:
        parse_instant("nope")
    assert raised.value.reason == "unreadable_time"


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (NOON, "2024-03-01T12:00:00.000Z"),
        (NOON.replace(microsecond=123_999), "2024-03-01T12:00:00.123Z"),
        (datetime(2024, 3, 1, 14, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T12:00:00.000Z"),
        (NOON.replace(tzinfo=None), "2024-03-01T12:00:00.000Z"),
        (datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC), "0005-01-02T03:04:05.000Z"),
    ],
)
def test_format_instant_writes_utc_milliseconds_z(instant: datetime, text: str) -> None:
    assert format_instant(instant) == text


def test_format_then_parse_round_trips_at_millisecond_precision() -> None:
    instant = datetime(2031, 7, 9, 23, 59, 58, 987_654, tzinfo=UTC)
    assert parse_instant(format_instant(instant)) == truncate_to_milliseconds(instant)


def test_unix_milliseconds_floors_also_before_the_epoch() -> None:
    assert unix_milliseconds(NOON) == NOON_MS
    assert unix_milliseconds(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1


@pytest.mark.parametrize(
    "value",
    [Decimal128("1709294400"), Decimal128("1709294400000"), Decimal("1709294400.000")],
    ids=["decimal128_seconds", "decimal128_milliseconds", "decimal"],
)
def test_a_bson_decimal_reads_like_its_extended_json_form(value: object) -> None:
    # The live consumer gets Decimal128 from pymongo where the offline check gets
    # {"$numberDecimal": ...}: both must read to the same instant.
    assert parse_instant(value) == NOON


def test_a_bson_decimal_nan_is_unreadable() -> None:
    with pytest.raises(UnreadableTimeError, match="NaN"):
        parse_instant(Decimal128("NaN"))


@given(
    instant=st.datetimes(
        min_value=datetime(1000, 1, 2),  # noqa: DTZ001 - naive bounds; strftime pads no year < 1000
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001 - as above
        timezones=st.just(UTC),
    ),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    separator=st.sampled_from("T "),
    digits=st.integers(min_value=0, max_value=6),
    zulu=st.booleans(),
)
def test_the_fast_reading_of_rfc_3339_gives_the_general_readings_instant(
    instant: datetime, offset_minutes: int, separator: str, digits: int, zulu: bool
) -> None:
    """``_parse_string`` reads the common form with ``fromisoformat``; it must mean exactly
    what the general pattern reads (``_parse_general``), zone and fraction included."""
    zone = timezone(timedelta(minutes=0 if zulu else offset_minutes))
    try:
        local = instant.astimezone(zone)
    except OverflowError:
        return  # past year 9999 or before year 1 in that zone: not writable
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text += "Z" if zulu else f"{sign}{hours:02d}:{minutes:02d}"
    fast = _parse_string(text, text)
    assert fast == _parse_general(text, text)
    assert fast.tzinfo is UTC


def test_an_out_of_range_rfc_3339_date_is_worded_by_the_general_reading() -> None:
    with pytest.raises(UnreadableTimeError, match="2026-02-30T14:00:00Z"):
        parse_instant("2026-02-30T14:00:00Z")
