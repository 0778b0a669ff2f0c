"""Conditional single-document updates, done the cheapest safe way for each server.

A write of this service applies only while some fields of the document are as read
(``passes`` for a status change, the outbox for its clearing). MongoDB evaluates
``update_one({_id, **condition}, change)`` atomically on the ``_id`` index, whatever else
the filter holds: :class:`ServerSideConditions`.

FerretDB 1.24 on SQLite does neither. It evaluates a conditional update as a read, a
comparison in Go and a write, without atomicity (``docs/architecture.md``), and it hands a
filter to SQLite only when the filter is exactly ``{_id: <string or ObjectId>}``. Any other
filter makes it decode every document of the collection, measured 10-20 times slower
than the SQL-side ``_id`` match (``docs/benchmarks.md``). :class:`ClientSideConditions`
therefore reads by ``_id`` alone, compares here, and writes by ``_id`` alone, while the
store holds its process-wide write lock, so no write of this process can come in between.
That is no weaker than FerretDB's own conditional update, and several times cheaper.

It also sends FerretDB one statement per ``update`` command, never a ``bulk_write``:
FerretDB 1.24 keeps each statement's SQLite connection until the whole command ends, and
a command of more statements than its pool holds (100) waits forever for a connection
it holds itself, hanging the whole server (``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

Document = dict[str, Any]

# The one operator a condition may use besides plain equality.
ABSENT: Mapping[str, Any] = {"$exists": False}

# From this many documents on, FerretDB reads them for a batch of updates in one query
# (which decodes the whole collection) rather than one ``_id`` lookup each: measured, such a
# query costs about 24 lookups by ``_id`` whatever the collection's size (bench/store_ops.py).
BATCH_READ_MIN = 32


@dataclass(frozen=True, slots=True)
class ConditionalUpdate:
    """``change`` applied to document ``doc_id`` only while it matches ``condition``.

    ``condition`` maps field names to the exact value expected, or to :data:`ABSENT`; an
    empty one always matches (an unconditional update of an existing document).
    """

    doc_id: Any
    condition: Mapping[str, Any]
    change: Mapping[str, Any]


class ConditionalUpdater(Protocol):
    async def update_one(self, update: ConditionalUpdate) -> bool:
        """Apply one update; False if the document no longer matched."""
        ...

    async def update_each(self, updates: Sequence[ConditionalUpdate]) -> bool:
        """Apply each update that still matches; True if every one did."""
        ...


class ServerSideConditions:
    """MongoDB: the condition is part of the filter; a batch is one ``bulk_write``."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def update_one(self, update: ConditionalUpdate) -> bool:
        result = await self._collection.update_one(_filter(update), dict(update.change))
        return result.matched_count == 1

    async def update_each(self, updates: Sequence[ConditionalUpdate]) -> bool:
        if not updates:
            return True
        result = await self._collection.bulk_write(
            [UpdateOne(_filter(u), dict(u.change)) for u in updates], ordered=False
        )
        return result.matched_count == len(updates)


class ClientSideConditions:
    """FerretDB: read by ``_id``, compare here, write by ``_id``.

    The caller must hold the store's write lock, so that this process's own writes cannot
    interleave between the read and the write.
    """

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def update_one(self, update: ConditionalUpdate) -> bool:
        if not update.condition:
            return await self._write(update)
        current = await self._collection.find_one(
            {"_id": update.doc_id}, dict.fromkeys(update.condition, 1)
        )
        return await self._write_if_matching(current, update)

    async def update_each(self, updates: Sequence[ConditionalUpdate]) -> bool:
        conditional = [u for u in updates if u.condition]
        if len(conditional) < BATCH_READ_MIN:
            matched = [await self.update_one(u) for u in updates]
            return all(matched)
        fields = {field for u in conditional for field in u.condition}
        cursor = self._collection.find(
            {"_id": {"$in": [u.doc_id for u in conditional]}}, dict.fromkeys(fields, 1)
        )
        current = {doc["_id"]: doc async for doc in cursor}
        matched = [
            await (
                self._write_if_matching(current.get(u.doc_id), u) if u.condition else self._write(u)
            )
            for u in updates
        ]
        return all(matched)

    async def _write_if_matching(self, current: Document | None, update: ConditionalUpdate) -> bool:
        if current is None or not matches(current, update.condition):
            return False
        return await self._write(update)

    async def _write(self, update: ConditionalUpdate) -> bool:
        result = await self._collection.update_one({"_id": update.doc_id}, dict(update.change))
        return result.matched_count == 1


def matches(document: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    """Whether ``document`` satisfies ``condition`` (equality, or :data:`ABSENT`)."""
    for field, expected in condition.items():
        if expected == ABSENT:
            if field in document:
                return False
        elif field not in document or document[field] != expected:
            return False
    return True


def _filter(update: ConditionalUpdate) -> Document:
    return {"_id": update.doc_id, **update.condition}
