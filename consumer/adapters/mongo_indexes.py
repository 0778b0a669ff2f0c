"""The indexes the service needs, squared with those a collection already has.

An operator's collection often has indexes of its own: the refresher's cache is likely to
have a *unique* index on ``user_id`` under a name of its choosing. Creating ``user_id_1``
beside it fails on MongoDB (an index with that key exists: code 85/86), and retrying that
never helps. So start first reads ``listIndexes`` and decides, with :func:`plan_indexes`
(pure: index documents in, a plan out), for each index the service needs:

- an existing index serves the same lookups (its key begins with the needed key, in the
  same or the opposite order, and it indexes every document: not sparse, not partial, no
  collation; not unique on a field this service writes) -> use it, create nothing;
- none serves, but one holds the needed name or the needed key -> a conflict: start stops
  with a message naming that index and what to do (:class:`IndexConflictError`);
- else -> create the index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from consumer.domain.outbox import OUTBOX_RELAY, OUTBOX_SINCE
from consumer.domain.user_update import CHECKED_AT, NEXT_CHECK_AT
from consumer.errors import ConfigError, IndexConflictError
from consumer.logs import get_logger

log = get_logger(__name__)

IndexKey = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index the service creates: its name, key, the lookups it serves (for messages),
    and whether the service writes its first field (a unique index there refuses writes)."""

    name: str
    key: IndexKey
    serves: str
    written: bool = False


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """What start does: create ``create``; ``reused`` pairs a needed index with the
    existing one used instead; ``conflicts`` are one-line messages (start stops)."""

    create: tuple[IndexSpec, ...] = ()
    reused: tuple[tuple[str, str], ...] = ()
    conflicts: tuple[str, ...] = ()


# The cache's indexes: what each serves, and whether this service writes the field (a
# unique index on such a field would refuse equal values).
CACHE_INDEXES = (
    IndexSpec("user_id_1", (("user_id", 1),), "lookups by user_id and sweeps in its order"),
    IndexSpec("next_check_at_1", ((NEXT_CHECK_AT, 1),), "finding due users", written=True),
    IndexSpec(
        "outbox_since_1", ((OUTBOX_SINCE, 1),), "finding legacy outbox orphans", written=True
    ),
    IndexSpec("outbox_relay_1", ((OUTBOX_RELAY, 1),), "finding unpublished outboxes", written=True),
    # Never-evaluated documents are due: found by this marker's absence.
    IndexSpec("checked_at_1", ((CHECKED_AT, 1),), "finding unevaluated users", written=True),
)


async def ensure_indexes(
    collection: AsyncCollection[Any],
    needed: Sequence[IndexSpec],
    op: Callable[[str], AbstractContextManager[None]],
) -> None:
    """Read ``collection``'s indexes, then carry out :func:`plan_indexes`: log those used
    instead of ours, raise :class:`IndexConflictError` for a clash, create the rest. ``op``
    wraps each operation (metrics, typed errors)."""
    with op("list_indexes"):
        existing = await (await collection.list_indexes()).to_list()
    plan = plan_indexes(collection.name, existing, needed)
    for wanted, used in plan.reused:
        log.info("index_reused", collection=collection.name, needed=wanted, existing=used)
    error = conflict_error(plan)
    if error is not None:
        log.error("index_conflict", collection=collection.name, error=str(error))
        raise error
    for spec in plan.create:
        try:
            with op("create_index"):
                await collection.create_index(list(spec.key), name=spec.name)
        except IndexConflictError:
            raise
        except ConfigError as exc:
            # The policy's index-conflict codes (consumer.policy_codes): defined meanwhile by
            # someone else, as the plan saw no clash. Said with the index and what to do.
            message = (
                f"MongoDB refused index {spec.name!r} on {collection.name}"
                f" {describe_key(spec.key)}: an index with that name or key exists with"
                f" another definition; drop or change it, then start again ({exc})"
            )
            raise IndexConflictError(message) from exc


def plan_indexes(
    collection: str, existing: Sequence[Mapping[str, Any]], needed: Sequence[IndexSpec]
) -> IndexPlan:
    """Decide, from ``existing`` (``listIndexes`` documents), what to do for ``needed``."""
    create: list[IndexSpec] = []
    reused: list[tuple[str, str]] = []
    conflicts: list[str] = []
    for spec in needed:
        serving = [index for index in existing if _unfit(index, spec) is None]
        if serving:
            named = [index for index in serving if index.get("name") == spec.name]
            chosen = (named or serving)[0]
            if chosen.get("name") != spec.name or _key(chosen) != spec.key:
                reused.append((spec.name, str(chosen.get("name"))))
            continue
        clashing = [
            index for index in existing if index.get("name") == spec.name or _key(index) == spec.key
        ]
        if clashing:
            conflicts.append(_conflict(collection, clashing[0], spec))
        else:
            create.append(spec)
    return IndexPlan(tuple(create), tuple(reused), tuple(conflicts))


def conflict_error(plan: IndexPlan) -> IndexConflictError | None:
    """The error that stops start for ``plan``'s conflicts, if it has any."""
    if not plan.conflicts:
        return None
    return IndexConflictError("; ".join(plan.conflicts))


def describe_key(key: IndexKey | Mapping[str, Any]) -> str:
    pairs = key.items() if isinstance(key, Mapping) else key
    return "{" + ", ".join(f"{field}: {direction}" for field, direction in pairs) + "}"


def _key(index: Mapping[str, Any]) -> IndexKey | None:
    key = index.get("key")
    if not isinstance(key, Mapping):
        return None
    pairs = []
    for field, direction in key.items():
        if isinstance(direction, bool) or not isinstance(direction, int | float):
            return None  # "hashed", "text", "2dsphere": no ordered lookups
        if direction not in (1, -1):
            return None
        pairs.append((str(field), int(direction)))
    return tuple(pairs)


def _unfit(index: Mapping[str, Any], spec: IndexSpec) -> str | None:
    """Why ``index`` cannot serve ``spec``'s lookups, or ``None`` if it can."""
    key = _key(index)
    wanted = len(spec.key)
    if key is None or len(key) < wanted:
        return "its key is not an ordered key beginning with the needed one"
    head = key[:wanted]
    if head not in (spec.key, tuple((f, -d) for f, d in spec.key)):
        return "its key does not begin with the needed key"
    collation = index.get("collation")
    reasons = (
        (bool(index.get("sparse")), "it is sparse: documents without the field are not in it"),
        (index.get("partialFilterExpression") is not None, "it is partial: some documents only"),
        (
            isinstance(collation, Mapping) and collation.get("locale", "simple") != "simple",
            "it has a collation: lookups without it cannot use it",
        ),
        (bool(index.get("hidden")), "it is hidden from the query planner"),
        (
            spec.written and bool(index.get("unique")),
            "it is unique on a field the service writes: equal values would be refused",
        ),
    )
    return next((reason for applies, reason in reasons if applies), None)


def _conflict(collection: str, index: Mapping[str, Any], spec: IndexSpec) -> str:
    name = index.get("name")
    key = index.get("key")
    shown = describe_key(key) if isinstance(key, Mapping) else repr(key)
    why = _unfit(index, spec)
    return (
        f"MongoDB index {name!r} on {collection} {shown} conflicts with the index"
        f" pass-status needs, {spec.name!r} {describe_key(spec.key)} for {spec.serves},"
        f" and cannot serve instead: {why}. Drop or change it (an ascending, non-sparse,"
        f" non-partial index whose key begins with {spec.key[0][0]}), e.g."
        f" db.{collection}.dropIndex({str(name)!r}), then start again"
    )
