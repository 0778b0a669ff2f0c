"""Properties of the rules over generated documents: idempotent, monotonic, field-preserving."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.rules import STATUS_RANK, TERMINAL_STATUSES, apply_transitions, evaluate_user
from consumer.domain.ticket_used import apply_ticket_used
from hypothesis import given, settings
from hypothesis import strategies as st

BASE = datetime(2024, 6, 1, 12, tzinfo=UTC)
PROPERTY_SETTINGS = settings(max_examples=80, deadline=None)

instants = st.integers(min_value=-3 * 86_400_000, max_value=3 * 86_400_000).map(
    lambda ms: BASE + timedelta(milliseconds=ms)
)
zones = st.sampled_from(["Z", "+00:00", "+02:00", "-0530", "+01", " UTC", "GMT", ""])


def _iso(instant: datetime, zone: str) -> str:
    offsets = {"+02:00": 2, "-0530": -5.5, "+01": 1}
    local = instant + timedelta(hours=offsets.get(zone, 0))
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}{zone}"


time_values = st.one_of(
    st.builds(_iso, instants, zones),
    instants.map(lambda i: int(i.timestamp() * 1000)),
    instants.map(lambda i: int(i.timestamp())),
    instants.map(lambda i: {"$date": _iso(i, "Z")}),
    instants.map(lambda i: {"$date": {"$numberLong": str(int(i.timestamp() * 1000))}}),
    instants,
)
# Mostly readable values, so that transitions are common; now and then a bad one.
expirations = st.one_of(
    time_values, time_values, time_values, st.none(), st.sampled_from(["", "soon", "2024-99-99"])
)
first_uses = st.one_of(st.none(), st.sampled_from(["", "  ", "garbled"]), time_values)
statuses = st.one_of(
    st.sampled_from(["USABLE", "USING", "USABLE", "USING", "EXPIRED", "USES_GONE"]),
    st.sampled_from(["USABLE", "USING", "FOO", "usable", ""]),
    st.sampled_from(["USABLE", "USING", None, 3]),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(["", "x", "é"]))
json_values = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=2), st.fixed_dictionaries({"k": json_scalars})
)
# Fields the rules do not know; they must come through untouched.
unknown_fields = st.dictionaries(
    st.sampled_from(["timestamp", "payload_hash", "uuid", "x-extra", "$weird", "nested"]),
    json_values,
    max_size=3,
)


@st.composite
def passes(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(json_scalars)  # not an object
    payload = {**draw(unknown_fields), "expiration": draw(expirations)}
    if draw(st.booleans()):
        payload["first_use"] = draw(first_uses)
    return {
        **draw(unknown_fields),
        "pass_uuid": draw(st.sampled_from("abcdefghijklmnop")),
        "status": draw(statuses),
        "payload": payload,
    }


documents = st.builds(
    lambda user_id, items, extra: {**extra, "user_id": user_id, "passes": items},
    st.integers(min_value=1, max_value=10**12),
    st.lists(passes(), max_size=5),
    unknown_fields,
)


def _without_statuses(doc: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(doc)
    for item in stripped["passes"]:
        if isinstance(item, dict):
            item.pop("status", None)
    return stripped


def _status(item: Any) -> Any:
    return item.get("status") if isinstance(item, dict) else None


@PROPERTY_SETTINGS
@given(documents, instants)
def test_evaluating_twice_is_evaluating_once(doc: dict[str, Any], now: datetime) -> None:
    first = evaluate_user(doc, now)
    updated = apply_transitions(doc, first.transitions)
    second = evaluate_user(updated, now)
    assert second.transitions == ()
    assert second.skipped == first.skipped
    assert second.next_check_at == first.next_check_at


@PROPERTY_SETTINGS
@given(documents, instants)
def test_transitions_only_go_forward(doc: dict[str, Any], now: datetime) -> None:
    for transition in evaluate_user(doc, now).transitions:
        assert STATUS_RANK[transition.to_status] > STATUS_RANK[transition.from_status]
        assert transition.status_log == f"{transition.from_status} -> {transition.to_status}"


@PROPERTY_SETTINGS
@given(documents, instants, st.integers(min_value=0, max_value=4 * 86_400_000))
def test_a_later_evaluation_never_moves_a_pass_back(
    doc: dict[str, Any], now: datetime, later_ms: int
) -> None:
    at_now = apply_transitions(doc, evaluate_user(doc, now).transitions)
    later = now + timedelta(milliseconds=later_ms)
    at_later = apply_transitions(at_now, evaluate_user(at_now, later).transitions)
    for before, after in zip(at_now["passes"], at_later["passes"], strict=True):
        if _status(before) in STATUS_RANK:
            assert STATUS_RANK[_status(after)] >= STATUS_RANK[_status(before)]


@PROPERTY_SETTINGS
@given(documents, instants)
def test_terminal_and_unknown_statuses_never_change(doc: dict[str, Any], now: datetime) -> None:
    updated = apply_transitions(doc, evaluate_user(doc, now).transitions)
    for before, after in zip(doc["passes"], updated["passes"], strict=True):
        status = _status(before)
        if status in TERMINAL_STATUSES or status not in {"USABLE", "USING"}:
            assert after == before


@PROPERTY_SETTINGS
@given(documents, instants)
def test_every_field_but_status_survives_and_input_is_untouched(
    doc: dict[str, Any], now: datetime
) -> None:
    original = copy.deepcopy(doc)
    updated = apply_transitions(doc, evaluate_user(doc, now).transitions)
    assert doc == original
    assert _without_statuses(updated) == _without_statuses(original)
    assert list(updated) == list(original)  # key order kept too


@PROPERTY_SETTINGS
@given(documents, st.sampled_from(["a", "b", "c"]), instants)
def test_ticket_used_changes_at_most_first_use(
    doc: dict[str, Any], pass_uuid: str, used_at: datetime
) -> None:
    original = copy.deepcopy(doc)
    try:
        updated, first_use = apply_ticket_used(doc, pass_uuid, used_at.isoformat())
    except Exception:  # noqa: BLE001 - only the unknown-pass error is allowed
        assert not any(
            isinstance(p, dict) and p.get("pass_uuid") == pass_uuid for p in doc["passes"]
        )
        return
    assert doc == original
    if first_use is None:
        assert updated == original
        return
    expected = copy.deepcopy(original)
    expected["passes"][first_use.index]["payload"]["first_use"] = used_at.isoformat()
    assert updated == expected
