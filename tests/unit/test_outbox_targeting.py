"""Every update of an outbox names the user it belongs to, so that on a cluster sharded
by ``user_id`` it goes to one shard rather than to all of them (docs/scaling.md)."""

from __future__ import annotations

from consumer.domain.outbox import clearing_steps, rejecting_steps


def _entry(event_id: str, user_id: object = 7) -> dict[str, object]:
    return {"event_id": event_id, "user_id": user_id, "pass_uuid": "p"}


def test_each_step_of_a_clear_names_the_entries_user() -> None:
    entries = [_entry("e1"), _entry("e2")]
    emptied, pulled, unmarked = clearing_steps([("d1", entries)])
    for step in (emptied, pulled, unmarked):
        assert [(c.doc_id, c.condition["user_id"]) for c in step] == [("d1", 7)]


def test_each_step_of_a_rejection_names_the_entrys_user() -> None:
    moved, unmarked = rejecting_steps([("d1", [_entry("e1")])])
    assert [c.condition["user_id"] for c in moved + unmarked] == [7, 7]


def test_without_one_integer_user_the_update_goes_by_id_alone() -> None:
    # a marker-only clear has no entry to name the user; mixed or odd ids name none
    for entries in ([], [_entry("e1", 7), _entry("e2", 8)], [_entry("e1", True)]):
        changes = [c for step in clearing_steps([("d1", entries)]) for c in step]
        assert all("user_id" not in c.condition for c in changes), entries
