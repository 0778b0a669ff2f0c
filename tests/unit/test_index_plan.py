"""Start squares the indexes the service needs with those the collection already has
(issue 19, "the operator's indexes"): an operator's index that serves the same lookups is
used (no second index), and a clashing definition stops start with a message naming the
index, instead of a create_index retried for ever (MongoDB codes 85/86)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from consumer.adapters.mongo import store_error
from consumer.adapters.mongo_indexes import (
    CACHE_INDEXES,
    IndexPlan,
    conflict_error,
    ensure_indexes,
    plan_indexes,
)
from consumer.adapters.mongo_sweeps import CHECKPOINT_INDEXES
from consumer.errors import ConfigError, IndexConflictError
from pymongo.errors import OperationFailure

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
NEEDED = [spec.name for spec in CACHE_INDEXES]


def index(name: str, key: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"v": 2, "key": key, "name": name, **options}


def plan(*existing: dict[str, Any]) -> IndexPlan:
    return plan_indexes("bytemark_tickets_cache", [ID_INDEX, *existing], CACHE_INDEXES)


def test_an_empty_collection_gets_every_index() -> None:
    result = plan()
    assert [spec.name for spec in result.create] == NEEDED
    assert result.reused == ()
    assert result.conflicts == ()


def test_the_services_own_indexes_are_left_alone() -> None:
    result = plan(*(index(s.name, dict(s.key)) for s in CACHE_INDEXES))
    assert result == IndexPlan()


@pytest.mark.parametrize(
    "existing",
    [
        index("uid_unique", {"user_id": 1}, unique=True),
        index("by_user", {"user_id": 1}),
        index("user_desc", {"user_id": -1}, unique=True),
        index("user_and_more", {"user_id": 1, "updated_at": -1}),
        index("user_id_1", {"user_id": 1}, unique=True),
    ],
    ids=["unique_other_name", "plain_other_name", "descending", "compound", "unique_same_name"],
)
def test_operators_index_beginning_with_user_id_is_used_and_user_id_1_not_created(
    existing: dict[str, Any],
) -> None:
    result = plan(existing)
    assert "user_id_1" not in [spec.name for spec in result.create]
    assert result.conflicts == ()
    if existing["name"] != "user_id_1":
        assert result.reused == (("user_id_1", existing["name"]),)


@pytest.mark.parametrize(
    ("existing", "why"),
    [
        (index("next_check_at_1", {"pass_status_rev": 1}), "does not begin with the needed key"),
        (index("next_check_at_1", {"next_check_at": 1}, sparse=True), "sparse"),
        (index("nca", {"next_check_at": 1}, unique=True), "unique on a field the service writes"),
        (
            index("nca", {"next_check_at": 1}, partialFilterExpression={"x": 1}),
            "partial",
        ),
        (index("next_check_at_1", {"next_check_at": "hashed"}), "not an ordered key"),
    ],
    ids=["same_name_other_key", "sparse", "unique_written_field", "partial", "hashed"],
)
def test_conflicting_next_check_at_index_stops_start_naming_it(
    existing: dict[str, Any], why: str
) -> None:
    result = plan(existing)
    assert "next_check_at_1" not in [spec.name for spec in result.create]
    (message,) = result.conflicts
    assert repr(existing["name"]) in message
    assert "'next_check_at_1'" in message
    assert why in message
    assert "dropIndex" in message
    error = conflict_error(result)
    assert isinstance(error, IndexConflictError)
    assert isinstance(error, ConfigError)  # start refuses with exit 2
    assert "\n" not in str(error)


def test_a_same_key_index_under_another_name_serves_instead_of_clashing() -> None:
    result = plan(index("due_at", {"next_check_at": 1}))
    assert result.reused == (("next_check_at_1", "due_at"),)
    assert result.conflicts == ()


def test_an_unrelated_index_changes_nothing() -> None:
    result = plan(index("email_1", {"email": 1}, unique=True))
    assert [spec.name for spec in result.create] == NEEDED


def test_checkpoint_indexes_are_planned_the_same_way() -> None:
    existing = [ID_INDEX, index("sweep_seq_1", {"sweep": 1})]
    result = plan_indexes("pass_status_sweeps", existing, CHECKPOINT_INDEXES)
    assert [spec.name for spec in result.create] == ["done_at_1", "saved_at_1"]
    (message,) = result.conflicts
    assert "'sweep_seq_1'" in message


class _RacedCollection:
    """No index when read; a conflicting one by the time ours is created."""

    name = "bytemark_tickets_cache"

    async def list_indexes(self) -> Any:
        class Cursor:
            async def to_list(self) -> list[dict[str, Any]]:
                return [ID_INDEX]

        return Cursor()

    async def create_index(self, keys: Any, name: str) -> str:  # noqa: ARG002 - the port
        raise OperationFailure(f"Index already exists with a different name: {name}x", 85)


async def test_a_conflict_met_while_creating_stops_start_naming_the_index() -> None:
    @contextmanager
    def op(operation: str) -> Iterator[None]:
        try:
            yield
        except OperationFailure as exc:  # as the store's _op: classified by the policy
            raise store_error(operation, None, exc) from exc

    with pytest.raises(IndexConflictError, match="MongoDB refused index 'user_id_1'"):
        await ensure_indexes(_RacedCollection(), CACHE_INDEXES, op)  # type: ignore[arg-type]
