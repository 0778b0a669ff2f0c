"""The unified format's rules for comparing an expected value with an actual one: numbers
equal by value whatever their BSON type, extra fields allowed in root-level documents
only, and the special operators ``$$exists``, ``$$type``, ``$$unsetOrMatches``, ``$$lte``,
``$$matchAsRoot``, ``$$matchAsDocument``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp, json_util
from bson.code import Code


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class Unsupported(Exception):  # noqa: N818 - a reason to skip, not an error
    """The test needs something this interpreter does not do; the message is the reason."""


_TYPE_NAMES: list[tuple[type, str]] = [
    (bool, "bool"),
    (Int64, "long"),
    (int, "int"),
    (float, "double"),
    (str, "string"),
    (ObjectId, "objectId"),
    (dt.datetime, "date"),
    (Binary, "binData"),
    (bytes, "binData"),
    (Decimal128, "decimal"),
    (Timestamp, "timestamp"),
    (Regex, "regex"),
    (Code, "javascript"),
    (MinKey, "minKey"),
    (MaxKey, "maxKey"),
    (list, "array"),
    (Mapping, "object"),
]


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    for cls, name in _TYPE_NAMES:
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Int64) and not isinstance(value, bool)


def mismatch(  # noqa: PLR0911, PLR0912 - one return per rule of the format
    expected: Any, actual: Any, *, root: bool, path: str = ""
) -> str | None:
    """None if actual matches expected, else where and how it differs."""
    if isinstance(expected, Mapping) and len(expected) == 1:
        ((key, arg),) = expected.items()
        if isinstance(key, str) and key.startswith("$$"):
            return _operator(key, arg, actual, path=path)
    if isinstance(expected, Mapping):
        if actual is MISSING or not isinstance(actual, Mapping):
            return f"{path or '/'}: expected a document, got {actual!r}"
        for key, value in expected.items():
            found = mismatch(value, actual.get(key, MISSING), root=False, path=f"{path}.{key}")
            if found:
                return found
        extra = set(actual) - set(expected)
        if extra and not root:
            return f"{path or '/'}: unexpected fields {sorted(extra)}"
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path or '/'}: expected {expected!r}, got {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = mismatch(e, a, root=False, path=f"{path}[{i}]")
            if found:
                return found
        return None
    if _is_number(expected) and _is_number(actual):
        return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"
    if type_name(expected) != type_name(actual) or expected != actual:
        return f"{path or '/'}: expected {expected!r}, got {actual!r}"
    return None


def _operator(  # noqa: PLR0911 - one return per operator
    key: str, arg: Any, actual: Any, *, path: str
) -> str | None:
    if key == "$$exists":
        return None if (actual is not MISSING) == bool(arg) else f"{path}: $$exists {arg}"
    if key == "$$type":
        names = arg if isinstance(arg, list) else [arg]
        names = ["int" if n == "number" else n for n in names]
        got = type_name(actual) if actual is not MISSING else "missing"
        return None if got in names else f"{path}: type {got}, expected {names}"
    if key == "$$unsetOrMatches":
        return None if actual is MISSING else mismatch(arg, actual, root=False, path=path)
    if key == "$$lte":
        ok = actual is not MISSING and _is_number(actual) and actual <= arg
        return None if ok else f"{path}: {actual!r} > {arg!r}"
    if key == "$$matchAsRoot":
        return mismatch(arg, actual, root=True, path=path)
    if key == "$$matchAsDocument":
        if not isinstance(actual, str):
            return f"{path}: expected a JSON string"
        return mismatch(arg, json_util.loads(actual), root=True, path=path)
    raise Unsupported(f"assertion {key}")
