"""MongoDB's query and update semantics, in memory, for the operators the service sends.

Filters: equality on whole values (documents compare field by field *in order*, as BSON
does; ``None`` also matches a missing field; an array field also matches when one element
equals the value), ``$exists``, ``$in``, ``$ne``, ``$lt``/``$lte``/``$gt``/``$gte`` (only
between values of one BSON type class: numbers, strings or dates), ``$mod``, ``$or`` and
``$and``; dotted paths through documents and array indexes.

Updates: ``$set`` and ``$unset`` (dotted paths, positional indexes), ``$inc``, ``$push``
(with ``$each``) and ``$pullAll``. Stored dates keep milliseconds, as BSON dates do.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

Document = dict[str, Any]

_MISSING = object()


def stored(value: Any) -> Any:
    """``value`` as a round trip through BSON leaves it: a deep copy, dates to the ms."""
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, Mapping):
        return {k: stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [stored(v) for v in value]
    return copy.copy(value)


def bson_equal(a: Any, b: Any) -> bool:
    """Equality as MongoDB compares BSON values: documents in field order, bool not int."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return len(a) == len(b) and all(
            ka == kb and bson_equal(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=False)
        )
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(bson_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | list | tuple) or isinstance(b, Mapping | list | tuple):
        return False
    return bool(a == b)


def _resolve(doc: Any, path: list[str]) -> list[Any]:
    """Every value at ``path`` (array elements are traversed, as MongoDB does)."""
    if not path:
        return [doc]
    head, rest = path[0], path[1:]
    if isinstance(doc, Mapping):
        return _resolve(doc[head], rest) if head in doc else []
    if isinstance(doc, list):
        if head.isdigit():
            index = int(head)
            return _resolve(doc[index], rest) if index < len(doc) else []
        return [v for element in doc for v in _resolve(element, path)]
    return []


def _type_class(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return None


def _compare(op: str, value: Any, bound: Any) -> bool:
    kind = _type_class(value)
    if kind is None or kind != _type_class(bound):
        return False
    if op == "$lt":
        return bool(value < bound)
    if op == "$lte":
        return bool(value <= bound)
    if op == "$gt":
        return bool(value > bound)
    return bool(value >= bound)


def _equals(values: list[Any], expected: Any) -> bool:
    if expected is None and not values:
        return True  # {field: null} matches a missing field
    for value in values:
        if bson_equal(value, expected):
            return True
        if isinstance(value, list) and any(bson_equal(v, expected) for v in value):
            return True
    return False


def _operator_holds(op: str, arg: Any, values: list[Any]) -> bool:
    if op == "$exists":
        return bool(values) == bool(arg)
    if op == "$in":
        return any(_equals(values, candidate) for candidate in arg)
    if op == "$ne":
        return not _equals(values, arg)
    if op == "$eq":
        return _equals(values, arg)
    if op in {"$lt", "$lte", "$gt", "$gte"}:
        return any(_compare(op, v, arg) for v in values)
    if op == "$mod":
        divisor, remainder = arg
        numbers = [v for v in values if _type_class(v) == "number"]
        return any(int(v) % divisor == remainder for v in numbers)
    raise NotImplementedError(f"filter operator {op}")


def _field_matches(doc: Document, path: str, condition: Any) -> bool:
    values = _resolve(doc, path.split("."))
    is_operator = isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition)
    if not is_operator:
        return _equals(values, condition)
    return all(_operator_holds(op, arg, values) for op, arg in condition.items())


def matches(doc: Document, query: Mapping[str, Any]) -> bool:
    """Whether ``doc`` satisfies the MongoDB filter ``query``."""
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(doc, q) for q in condition):
                return False
        elif key == "$and":
            if not all(matches(doc, q) for q in condition):
                return False
        elif not _field_matches(doc, key, condition):
            return False
    return True


def _parent(doc: Document, path: str, *, create: bool) -> tuple[Any, str] | None:
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            index = int(part)
            if index >= len(node) or node[index] is None:
                if not create:
                    return None
                node.extend([None] * (index + 1 - len(node)))  # MongoDB pads with nulls
                node[index] = {}
            node = node[index]
        elif isinstance(node, dict):
            if part not in node:
                if not create:
                    return None
                node[part] = {}
            node = node[part]
        else:
            raise TypeError(f"cannot traverse {part!r} in {path!r}")
    return node, parts[-1]


def _set(doc: Document, path: str, value: Any) -> None:
    found = _parent(doc, path, create=True)
    if found is None:
        raise ValueError(f"cannot set {path!r}")
    node, last = found
    if isinstance(node, list):
        index = int(last)
        node.extend([None] * (index + 1 - len(node)))
        node[index] = stored(value)
    else:
        node[last] = stored(value)


def _get(doc: Document, path: str) -> Any:
    found = _parent(doc, path, create=False)
    if found is None:
        return _MISSING
    node, last = found
    if isinstance(node, list):
        index = int(last)
        return node[index] if index < len(node) else _MISSING
    return node.get(last, _MISSING) if isinstance(node, dict) else _MISSING


def _unset(doc: Document, path: str, _arg: Any) -> None:
    found = _parent(doc, path, create=False)
    if found is not None and isinstance(found[0], dict):
        found[0].pop(found[1], None)


def _inc(doc: Document, path: str, arg: Any) -> None:
    current = _get(doc, path)
    _set(doc, path, arg if current is _MISSING else current + arg)


def _push(doc: Document, path: str, arg: Any) -> None:
    current = _get(doc, path)
    items = arg["$each"] if isinstance(arg, Mapping) and "$each" in arg else [arg]
    if current is _MISSING:
        _set(doc, path, list(items))
    elif isinstance(current, list):
        current.extend(stored(list(items)))
    else:
        raise TypeError(f"$push to a non-array {path!r}")


def _pull_all(doc: Document, path: str, arg: Any) -> None:
    current = _get(doc, path)
    if isinstance(current, list):
        current[:] = [v for v in current if not any(bson_equal(v, x) for x in arg)]


_UPDATES = {"$set": _set, "$unset": _unset, "$inc": _inc, "$push": _push, "$pullAll": _pull_all}


def apply_update(doc: Document, update: Mapping[str, Any]) -> None:
    """Apply the MongoDB update document ``update`` to ``doc`` in place."""
    for op, fields in update.items():
        if op not in _UPDATES:
            raise NotImplementedError(f"update operator {op}")
        for path, arg in fields.items():
            _UPDATES[op](doc, path, arg)
