"""Reading and writing instants: every time form a cache document or an event may hold.

Pure: no I/O. Every reader returns an aware UTC ``datetime`` or raises
:class:`consumer.errors.UnreadableTimeError` whose message quotes the bad value.

Accepted forms (DESIGN §3):

- ISO 8601 / RFC 3339 strings, ``T`` (or ``t``) or a space between date and time, optional
  seconds and fraction (any number of digits, truncated to microseconds), zone ``Z``,
  ``±HH:MM``, ``±HHMM``, ``±HH``, ``UTC`` or ``GMT`` (a space before the zone is allowed),
  no zone meaning UTC;
- a date alone (midnight UTC);
- an ``int`` or ``float`` of Unix seconds; a magnitude ``>= 1e11`` means milliseconds
  (1e11 s is the year 5138, 1e11 ms is 1973: no real expiration is ambiguous). ``bool`` is
  not a number, and numeric *strings* are not accepted (``"20240101"`` would be ambiguous);
- a ``datetime`` (what BSON dates decode to; naive means UTC) or a ``date`` (midnight UTC);
- Extended JSON: ``{"$date": <ISO string> | <int ms> | {"$numberLong": "<ms>"}}`` and the
  number wrappers ``{"$numberInt"|"$numberLong"|"$numberDouble"|"$numberDecimal": "<n>"}``,
  read like the plain number (canonical Extended JSON wraps every number);
- a ``Decimal`` or a BSON ``Decimal128`` (what pymongo decodes ``$numberDecimal`` to),
  read like ``{"$numberDecimal": ...}``, so the live consumer and the offline check agree.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from consumer.errors import UnreadableTimeError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECONDS_THRESHOLD = 1e11
_QUOTE_LIMIT = 80

_ISO = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})
    (?:
        [Tt\ ]
        (?P<hour>\d{2}):(?P<minute>\d{2})
        (?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?
        \ ?
        (?P<zone>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?
    )?
    """,
    re.VERBOSE,
)

_NUMBER_WRAPPERS = frozenset({"$numberInt", "$numberLong", "$numberDouble", "$numberDecimal"})


def quote(value: object) -> str:
    """``repr(value)`` cut to about 80 characters: safe to put in logs and reasons."""
    text = repr(value)
    if len(text) > _QUOTE_LIMIT:
        return text[: _QUOTE_LIMIT - 3] + "..."
    return text


def _unreadable(value: object, why: str = "") -> UnreadableTimeError:
    suffix = f" ({why})" if why else ""
    return UnreadableTimeError(f"unreadable time {quote(value)}{suffix}")


@lru_cache(maxsize=256)  # a file holds a handful of distinct zones
def _zone(text: str | None) -> timezone:
    if text is None or text in {"Z", "z", "UTC", "GMT"}:
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or "0")
    if hours > 23 or minutes > 59:
        raise ValueError("zone offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


# The form documents and events nearly always hold (RFC 3339, ``T`` or space, at most
# microseconds): read by ``datetime.fromisoformat`` in C, five times faster than the general
# pattern below, and to the same instant (tests/unit/test_times.py compares both).
_CANONICAL = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)


def _parse_string(raw: str, original: object) -> datetime:
    if _CANONICAL.fullmatch(raw):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            pass  # out of range: the general reading below words the error
        else:
            return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    return _parse_general(raw, original)


def _parse_general(raw: str, original: object) -> datetime:
    match = _ISO.fullmatch(raw.strip())
    if match is None:
        raise _unreadable(original)
    year, month, day, hour, minute, second, fraction, zone_text = match.groups()
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day), tzinfo=UTC)
        zone = _zone(zone_text)
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or "0"),
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
    except (ValueError, OverflowError) as exc:
        raise _unreadable(original, str(exc)) from None
    if zone is UTC:
        return local
    try:
        return local.astimezone(UTC)
    except OverflowError as exc:
        raise _unreadable(original, str(exc)) from None


def _from_milliseconds(ms: int | float, original: object) -> datetime:
    if isinstance(ms, float) and not math.isfinite(ms):
        raise _unreadable(original, "not a finite number")
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise _unreadable(original, "out of range") from None


def _from_unix_number(number: int | float, original: object) -> datetime:
    if isinstance(number, float) and not math.isfinite(number):
        raise _unreadable(original, "not a finite number")
    if abs(number) >= _MILLISECONDS_THRESHOLD:
        return _from_milliseconds(number, original)
    return _from_milliseconds(number * 1000, original)


def _wrapped_number(wrapper: str, text: object, original: object) -> int | float:
    if not isinstance(text, str):
        raise _unreadable(original)
    try:
        if wrapper in {"$numberInt", "$numberLong"}:
            return int(text)
        if wrapper == "$numberDouble":
            return float(text)
        return float(Decimal(text))
    except (ValueError, InvalidOperation):
        raise _unreadable(original) from None


def _parse_date_wrapper(inner: object, original: object) -> datetime:
    if isinstance(inner, str):
        return _parse_string(inner, original)
    if isinstance(inner, int) and not isinstance(inner, bool):
        return _from_milliseconds(inner, original)  # $date numbers are always milliseconds
    if isinstance(inner, dict) and len(inner) == 1 and isinstance(inner.get("$numberLong"), str):
        try:
            return _from_milliseconds(int(inner["$numberLong"]), original)
        except ValueError:
            raise _unreadable(original) from None
    raise _unreadable(original)


def _as_number(value: object) -> int | float | None:
    """An ``int``/``float`` as it is; a ``Decimal`` or a BSON ``Decimal128`` (duck-typed:
    the domain imports no bson) as a float, like the offline check's ``$numberDecimal``."""
    if isinstance(value, int | float):
        return value
    to_decimal = getattr(value, "to_decimal", None)
    decimal = to_decimal() if callable(to_decimal) else value
    return float(decimal) if isinstance(decimal, Decimal) else None


def parse_instant(value: object) -> datetime:
    """The instant ``value`` denotes, as an aware UTC datetime; see the module docstring."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return _parse_string(value, value)
    if isinstance(value, bool):
        raise _unreadable(value, "a boolean is not a time")
    number = _as_number(value)
    if number is not None:
        return _from_unix_number(number, value)
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$date":
            return _parse_date_wrapper(inner, value)
        if key in _NUMBER_WRAPPERS:
            return _from_unix_number(_wrapped_number(key, inner, value), value)
    raise _unreadable(value)


def as_utc(instant: datetime) -> datetime:
    """``instant`` in UTC; a naive datetime is taken to be UTC already."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def truncate_to_milliseconds(instant: datetime) -> datetime:
    """``instant`` without its sub-millisecond part (BSON dates hold milliseconds)."""
    return instant.replace(microsecond=instant.microsecond - instant.microsecond % 1000)


def unix_milliseconds(instant: datetime) -> int:
    """Whole milliseconds since the Unix epoch (floor, also before 1970)."""
    return (as_utc(instant) - _EPOCH) // timedelta(milliseconds=1)


def format_instant(instant: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (naive means UTC), sub-milliseconds dropped."""
    utc = as_utc(instant)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )
