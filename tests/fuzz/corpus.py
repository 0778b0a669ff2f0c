"""Bad messages with the dead-letter reason each must get, and a seeded generator of more.

Reasons that need the cache (``unknown_user``, ``unknown_pass``) are produced by the
integration test, which knows the seeded users; this module covers the edge parser's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping

import orjson

MAX_BYTES = 65536
GOOD_TICKET_USED: dict[str, object] = {
    "event_id": "e-1",
    "user_id": 1,
    "pass_uuid": "p-1",
    "used_at": "2026-01-01T00:00:00Z",
}
GOOD_TICK: dict[str, object] = {"event_id": "t-1", "tick_at": "2026-01-01T00:00:00Z", "mode": "due"}


def _with(base: Mapping[str, object], **changes: object) -> bytes:
    body = {**base, **changes}
    # json, not orjson: it writes integers beyond 64 bits too
    return json.dumps({k: v for k, v in body.items() if v is not _DROP}).encode()


_DROP = object()


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# (label, value, reason) — ticket-used messages
TICKET_USED_CORPUS: list[tuple[str, bytes | None, str]] = [
    ("tombstone", None, "not_json"),
    ("empty", b"", "not_json"),
    ("invalid utf-8", b'{"event_id": "\xff\xfe"}', "not_json"),
    ("lone surrogate", b'{"event_id": "\\ud800"}', "not_json"),
    ("not json", b"hello", "not_json"),
    ("truncated", b'{"event_id": "e', "not_json"),
    ("trailing garbage", orjson.dumps(GOOD_TICKET_USED) + b"x", "not_json"),
    ("nan", b'{"user_id": NaN}', "not_json"),
    ("array", b"[1, 2]", "schema_violation"),
    ("string", b'"text"', "schema_violation"),
    ("number", b"42", "schema_violation"),
    ("null", b"null", "schema_violation"),
    ("empty object", b"{}", "schema_violation"),
    ("user_id as string", _with(GOOD_TICKET_USED, user_id="1"), "schema_violation"),
    ("user_id float", _with(GOOD_TICKET_USED, user_id=1.5), "schema_violation"),
    ("user_id bool", _with(GOOD_TICKET_USED, user_id=True), "schema_violation"),
    ("user_id zero", _with(GOOD_TICKET_USED, user_id=0), "schema_violation"),
    ("user_id negative", _with(GOOD_TICKET_USED, user_id=-5), "schema_violation"),
    (
        "user_id enormous",
        b'{"event_id":"e","user_id":' + b"9" * 40 + b',"pass_uuid":"p","used_at":"2026-01-01"}',
        "schema_violation",
    ),
    ("user_id 2^53", _with(GOOD_TICKET_USED, user_id=2**53), "schema_violation"),
    ("missing pass_uuid", _with(GOOD_TICKET_USED, pass_uuid=_DROP), "schema_violation"),
    ("missing used_at", _with(GOOD_TICKET_USED, used_at=_DROP), "schema_violation"),
    ("extra field", _with(GOOD_TICKET_USED, extra=1), "schema_violation"),
    ("empty event_id", _with(GOOD_TICKET_USED, event_id=""), "schema_violation"),
    ("empty pass_uuid", _with(GOOD_TICKET_USED, pass_uuid=""), "schema_violation"),
    ("huge pass_uuid", _with(GOOD_TICKET_USED, pass_uuid="p" * 5000), "schema_violation"),
    ("pass_uuid object", _with(GOOD_TICKET_USED, pass_uuid={"a": 1}), "schema_violation"),
    ("used_at null", _with(GOOD_TICKET_USED, used_at=None), "schema_violation"),
    ("used_at number", _with(GOOD_TICKET_USED, used_at=1700000000), "schema_violation"),
    ("used_at empty", _with(GOOD_TICKET_USED, used_at=""), "schema_violation"),
    ("used_at unreadable", _with(GOOD_TICKET_USED, used_at="yesterday"), "unreadable_time"),
    (
        "used_at month 13",
        _with(GOOD_TICKET_USED, used_at="2026-13-01T00:00:00Z"),
        "unreadable_time",
    ),
    (
        "used_at year 99999",
        _with(GOOD_TICKET_USED, used_at="99999-01-01T00:00:00Z"),
        "unreadable_time",
    ),
    ("deep nesting", _nested(5000), "not_json"),
    ("deep nesting in a field", b'{"event_id":' + _nested(200) + b"}", "schema_violation"),
    ("too large", _with(GOOD_TICKET_USED, pass_uuid="p" * (MAX_BYTES + 10)), "too_large"),
]

# (label, value, reason) — tick messages
TICK_CORPUS: list[tuple[str, bytes | None, str]] = [
    ("tombstone", None, "not_json"),
    ("not json", b"\x00\x01", "not_json"),
    ("array", b"[]", "schema_violation"),
    ("bad mode", _with(GOOD_TICK, mode="sometimes"), "schema_violation"),
    ("apply string", _with(GOOD_TICK, apply="yes"), "schema_violation"),
    ("shard without shards", _with(GOOD_TICK, shard=1), "schema_violation"),
    ("shard above shards", _with(GOOD_TICK, shard=3, shards=2), "schema_violation"),
    ("negative user", _with(GOOD_TICK, user_id=-1), "schema_violation"),
    ("extra field", _with(GOOD_TICK, why="because"), "schema_violation"),
    ("tick_at unreadable", _with(GOOD_TICK, tick_at="soon"), "unreadable_time"),
    ("tick_at far future", _with(GOOD_TICK, tick_at="2999-01-01T00:00:00Z"), "tick_in_future"),
]


def generated_ticket_used(seed: int, count: int) -> Iterator[tuple[str, bytes, str]]:
    """Random mutations of a valid ticket-used event, each with its expected reason."""
    rng = random.Random(seed)
    wrong_values: list[object] = [None, True, 1.25, -1, 0, "", [], {}, "x" * 300, 2**70]
    for number in range(count):
        kind = rng.choice(["bytes", "type", "drop", "extra", "time"])
        if kind == "bytes":
            raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield f"gen-{number}-bytes", raw, "not_json"
            else:
                if not isinstance(parsed, dict):
                    yield f"gen-{number}-bytes", raw, "schema_violation"
        elif kind == "type":
            field = rng.choice(sorted(GOOD_TICKET_USED))
            value = rng.choice(wrong_values)
            valid = (field == "user_id" and value == 1) or (
                field in {"event_id", "pass_uuid"}
                and isinstance(value, str)
                and 0 < len(value) <= 128
            )
            if not valid:
                yield (
                    f"gen-{number}-type-{field}",
                    _with(GOOD_TICKET_USED, **{field: value}),
                    "schema_violation",
                )
        elif kind == "drop":
            field = rng.choice(sorted(GOOD_TICKET_USED))
            yield (
                f"gen-{number}-drop-{field}",
                _with(GOOD_TICKET_USED, **{field: _DROP}),
                "schema_violation",
            )
        elif kind == "extra":
            name = "".join(rng.choice("abcxyz_") for _ in range(rng.randint(1, 8)))
            if name not in GOOD_TICKET_USED:
                yield (
                    f"gen-{number}-extra",
                    _with(GOOD_TICKET_USED, **{name: 1}),
                    "schema_violation",
                )
        else:
            text = "".join(rng.choice("0123456789-:TZ ") for _ in range(rng.randint(1, 30)))
            yield f"gen-{number}-time", _with(GOOD_TICKET_USED, used_at=text), "unreadable_time?"
