"""The edge parser: bytes to a domain event, or an InputError carrying its reason code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from consumer.adapters.metrics import DEAD_LETTER_REASONS
from consumer.domain.events import TickMode
from consumer.errors import InputError
from consumer.parsing import parse_tick, parse_ticket_used
from consumer.replay import LEGACY_REASONS
from consumer.schemas import DEAD_LETTER, load_schema

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GOOD = {"event_id": "e1", "user_id": 5, "pass_uuid": "p1", "used_at": "2026-01-01T11:59:00Z"}


def test_a_valid_ticket_used_event_parses() -> None:
    event = parse_ticket_used(orjson.dumps(GOOD), 65536)
    assert (event.event_id, event.user_id, event.pass_uuid, event.used_at) == (
        "e1",
        5,
        "p1",
        "2026-01-01T11:59:00Z",
    )


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        (None, "not_json", "tombstone"),
        (b"\xff\xfe", "not_json", "not UTF-8 JSON"),
        (b"{", "not_json", "not UTF-8 JSON"),
        (b"[1]", "schema_violation", "expected a JSON object"),
        (b"42", "schema_violation", "expected a JSON object"),
        (orjson.dumps({**GOOD, "user_id": "5"}), "schema_violation", "user_id"),
        (orjson.dumps({**GOOD, "user_id": -1}), "schema_violation", "user_id"),
        (orjson.dumps({**GOOD, "user_id": 2**60}), "schema_violation", "user_id"),
        (
            b'{"event_id":"e","user_id":1180591620717411303424,"pass_uuid":"p","used_at":"2026-01-01"}',
            "schema_violation",
            "user_id",
        ),
        (
            orjson.dumps({k: v for k, v in GOOD.items() if k != "pass_uuid"}),
            "schema_violation",
            "pass_uuid",
        ),
        (orjson.dumps({**GOOD, "extra": 1}), "schema_violation", "must not contain"),
        (orjson.dumps({**GOOD, "pass_uuid": ""}), "schema_violation", "pass_uuid"),
        (orjson.dumps({**GOOD, "used_at": "yesterday"}), "unreadable_time", "'yesterday'"),
        (b'{"event_id": "' + b"x" * 70000 + b'"}', "too_large", "limit 65536"),
    ],
)
def test_bad_ticket_used_values_raise_with_their_reason(
    value: bytes | None, reason: str, fragment: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_ticket_used(value, 65536)
    assert caught.value.reason == reason
    assert fragment in str(caught.value)


def test_tick_defaults_and_shards() -> None:
    tick = parse_tick(
        orjson.dumps({"event_id": "t", "tick_at": "2026-01-01T12:00:00Z"}),
        65536,
        NOW,
        timedelta(minutes=5),
    )
    assert (tick.mode, tick.apply, tick.user_id, tick.shard, tick.shards) == (
        TickMode.DUE,
        True,
        None,
        0,
        1,
    )
    sharded = parse_tick(
        orjson.dumps(
            {
                "event_id": "t",
                "tick_at": "2026-01-01T12:00:00Z",
                "shard": 2,
                "shards": 4,
                "user_id": 0,
            }
        ),
        65536,
        NOW,
        timedelta(minutes=5),
    )
    assert (sharded.shard, sharded.shards, sharded.user_id) == (2, 4, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"event_id": "t", "tick_at": "2026-01-01T12:06:00Z"}, "tick_in_future"),
        (
            {"event_id": "t", "tick_at": "2026-01-01T12:00:00Z", "shard": 4, "shards": 4},
            "schema_violation",
        ),
        ({"event_id": "t", "tick_at": "2026-01-01T12:00:00Z", "shard": 1}, "schema_violation"),
        (
            {"event_id": "t", "tick_at": "2026-01-01T12:00:00Z", "mode": "sometimes"},
            "schema_violation",
        ),
        ({"event_id": "t", "tick_at": "soon"}, "unreadable_time"),
    ],
)
def test_bad_ticks_raise_with_their_reason(body: dict[str, object], reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_tick(orjson.dumps(body), 65536, NOW, timedelta(minutes=5))
    assert caught.value.reason == reason


def test_dead_letter_schema_lists_exactly_the_reason_codes_of_the_error_tree() -> None:
    schema_reasons = load_schema(DEAD_LETTER)["properties"]["reason"]["enum"]
    assert sorted(schema_reasons) == sorted([*DEAD_LETTER_REASONS, *LEGACY_REASONS])
