"""A ticket-used event records first_use only where there is none, and nothing else."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from consumer.domain.ticket_used import FirstUseSet, apply_ticket_used
from consumer.errors import UnknownPassError

USED_AT = "2024-06-01T11:30:00.000Z"


def a_doc(*passes: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": 9, "extra": {"keep": True}, "passes": list(passes)}


def a_pass(uuid: str, **payload: Any) -> dict[str, Any]:
    return {
        "pass_uuid": uuid,
        "status": "USABLE",
        "payload": {"expiration": "2030-01-01", **payload},
    }


@pytest.mark.parametrize(
    "payload",
    [{}, {"first_use": None}, {"first_use": ""}, {"first_use": "  \t"}],
    ids=["absent", "null", "empty", "blank"],
)
def test_first_use_is_set_when_absent_null_or_blank(payload: dict[str, Any]) -> None:
    doc = a_doc(a_pass("other"), a_pass("p", **payload))
    before = copy.deepcopy(doc)
    updated, first_use = apply_ticket_used(doc, "p", USED_AT)
    assert first_use == FirstUseSet(index=1, pass_uuid="p", first_use=USED_AT)
    assert updated["passes"][1]["payload"]["first_use"] == USED_AT
    assert doc == before  # input not mutated
    expected = copy.deepcopy(before)
    expected["passes"][1]["payload"]["first_use"] = USED_AT
    assert updated == expected
    assert updated["passes"][0] is doc["passes"][0]


@pytest.mark.parametrize("existing", ["2024-05-01T00:00:00Z", "garbled", {"$date": 1}, 0], ids=str)
def test_an_existing_first_use_wins(existing: object) -> None:
    doc = a_doc(a_pass("p", first_use=existing))
    updated, first_use = apply_ticket_used(doc, "p", USED_AT)
    assert first_use is None
    assert updated == doc
    assert updated["passes"][0]["payload"]["first_use"] == existing


def test_the_first_pass_with_a_duplicated_uuid_is_the_one_used() -> None:
    doc = a_doc(a_pass("p"), a_pass("p"))
    updated, first_use = apply_ticket_used(doc, "p", USED_AT)
    assert first_use is not None
    assert first_use.index == 0
    assert "first_use" not in updated["passes"][1]["payload"]


@pytest.mark.parametrize(
    "doc",
    [
        a_doc(a_pass("a")),
        a_doc(),
        {"user_id": 9},
        {"user_id": 9, "passes": "x"},
        a_doc({"pass_uuid": None}, "junk"),  # type: ignore[arg-type]
    ],
)
def test_an_unknown_pass_raises(doc: dict[str, Any]) -> None:
    with pytest.raises(UnknownPassError, match="no pass with pass_uuid 'p'") as raised:
        apply_ticket_used(doc, "p", USED_AT)
    assert raised.value.reason == "unknown_pass"


@pytest.mark.parametrize("payload", [None, "text", ["list"]])
def test_a_pass_without_a_payload_object_is_left_for_the_rules_to_report(payload: object) -> None:
    doc = a_doc({"pass_uuid": "p", "status": "USABLE", "payload": payload})
    updated, first_use = apply_ticket_used(doc, "p", USED_AT)
    assert first_use is None
    assert updated == doc
