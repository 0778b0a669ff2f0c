"""The edge parser never fails in another way than an InputError with a known reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from consumer.errors import InputError
from consumer.parsing import parse_tick, parse_ticket_used
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.corpus import (
    GOOD_TICK,
    GOOD_TICKET_USED,
    MAX_BYTES,
    TICK_CORPUS,
    TICKET_USED_CORPUS,
    generated_ticket_used,
)

REASONS = {
    "not_json",
    "schema_violation",
    "too_large",
    "tick_in_future",
    "unreadable_time",
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = timedelta(minutes=5)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _outcome(parse: Any, value: bytes | None) -> str:
    try:
        parse(value)
    except InputError as exc:
        reason = exc.reason
    else:
        return "ok"
    assert reason in REASONS, reason
    return reason


def _ticket_used(value: bytes | None) -> object:
    return parse_ticket_used(value, MAX_BYTES)


def _tick(value: bytes | None) -> object:
    return parse_tick(value, MAX_BYTES, NOW, FUTURE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_an_input_error(raw: bytes) -> None:
    _outcome(_ticket_used, raw)
    _outcome(_tick, raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_document_parses_or_raises_an_input_error(value: object) -> None:
    raw = orjson.dumps(value)
    assert _outcome(_ticket_used, raw) in {"schema_violation", "ok"} | REASONS
    assert _outcome(_tick, raw) != "ok" or isinstance(value, dict)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([*sorted(GOOD_TICKET_USED), "extra"]),
    json_values,
    st.booleans(),
)
def test_a_field_replaced_by_anything_is_accepted_only_when_valid(
    name: str, value: object, drop: bool
) -> None:
    body = dict(GOOD_TICKET_USED)
    if drop:
        body.pop(name, None)
    else:
        body[name] = value
    outcome = _outcome(_ticket_used, orjson.dumps(body))
    if (drop and name != "extra") or (name == "extra" and not drop):
        assert outcome == "schema_violation"
    if outcome == "ok":
        assert name == "extra" or not isinstance(body[name], (list, dict, bool, type(None)))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["event_id", "tick_at", "user_id", "mode", "apply", "shard", "shards"]),
    json_values,
)
def test_a_tick_field_replaced_by_anything_parses_or_raises_an_input_error(
    name: str, value: object
) -> None:
    _outcome(_tick, orjson.dumps({**GOOD_TICK, name: value}))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64).filter(lambda s: s.strip() != ""))
def test_any_used_at_text_is_read_or_unreadable_time(text: str) -> None:
    outcome = _outcome(_ticket_used, orjson.dumps({**GOOD_TICKET_USED, "used_at": text}))
    assert outcome in {"ok", "unreadable_time"}


@pytest.mark.parametrize(
    ("label", "value", "reason"), TICKET_USED_CORPUS, ids=[c[0] for c in TICKET_USED_CORPUS]
)
def test_ticket_used_corpus_gets_its_reason(label: str, value: bytes | None, reason: str) -> None:
    assert _outcome(_ticket_used, value) == reason


@pytest.mark.parametrize(("label", "value", "reason"), TICK_CORPUS, ids=[c[0] for c in TICK_CORPUS])
def test_tick_corpus_gets_its_reason(label: str, value: bytes | None, reason: str) -> None:
    assert _outcome(_tick, value) == reason


def test_generated_messages_get_their_reason() -> None:
    seen = 0
    for label, value, reason in generated_ticket_used(seed=20240601, count=400):
        outcome = _outcome(_ticket_used, value)
        if reason.endswith("?"):
            assert outcome in {"ok", reason[:-1]}, label
        else:
            assert outcome == reason, (label, value[:200])
        seen += 1
    assert seen > 300


def test_the_valid_messages_parse() -> None:
    assert _outcome(_ticket_used, orjson.dumps(GOOD_TICKET_USED)) == "ok"
    good_tick = {**GOOD_TICK, "tick_at": NOW.isoformat()}
    assert _outcome(_tick, orjson.dumps(good_tick)) == "ok"
