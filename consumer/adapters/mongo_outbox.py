"""The outbox's store side (MongoDB): relay sources and their watermarks
(``pass_status_relays``), the scan for outboxes not known published, and the updates that
clear or move aside entries.

Each running process is one relay source: one small document, registered before its first
write, that it alone updates every few seconds with its watermark
(:mod:`consumer.domain.watermarks`) and a heartbeat; ``done`` once it stopped with every
relay published. The orphan relay asks, in one query on the cache's indexed relay key,
for the documents each source that is not done has not published, and for legacy
entries by their marker.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from consumer.adapters.store_ports import OutboxScan
from consumer.domain.outbox import (
    OUTBOX,
    OUTBOX_RELAY,
    OUTBOX_SINCE,
    clearing_steps,
    rejecting_steps,
    written_at,
)
from consumer.domain.watermarks import (
    Watermark,
    parse_relay_key,
    relay_key,
    unpublished_filter,
)
from consumer.errors import StoreRefusedError

Document = dict[str, Any]
RELAYS_COLLECTION = "pass_status_relays"
_REGISTER_ATTEMPTS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RelaySources:
    def __init__(
        self,
        collection: AsyncCollection[Document],
        op: Callable[[str], AbstractContextManager[None]],
    ) -> None:
        self.collection = collection
        self._op = op

    async def register(self, token: str, host: str, now: datetime) -> int:
        """Register a new source: the next number, never used before (sources are never
        deleted). ``token`` tells this registration's own insert, landed though its answer
        was lost, from another process's that took the number first."""
        for _ in range(_REGISTER_ATTEMPTS):
            with self._op("register_relay_source"):
                last = await self.collection.find_one({}, {"_id": 1}, sort=[("_id", -1)])
            number = (last["_id"] if last is not None and isinstance(last["_id"], int) else 0) + 1
            doc = {
                "_id": number,
                "token": token,
                "through": 0,
                "unsettled": [],
                "host": host,
                "started_at": now,
                "heartbeat_at": now,
                "done": False,
            }
            try:
                with self._op("register_relay_source"):
                    await self.collection.insert_one(doc)
            except DuplicateKeyError:
                with self._op("register_relay_source"):
                    mine = await self.collection.find_one({"_id": number, "token": token})
                if mine is None:
                    continue  # another process took this number first: the next one
            return number
        raise StoreRefusedError(
            f"no relay source number after {_REGISTER_ATTEMPTS} attempts (too many processes"
            " starting at once?)"
        )

    async def save(self, source: int, mark: Watermark, now: datetime, *, done: bool) -> None:
        change = {
            "through": mark.through,
            "unsettled": sorted(mark.unsettled),
            "heartbeat_at": now,
            "done": done,
        }
        with self._op("save_relay_watermark"):
            await self.collection.update_one({"_id": source}, {"$set": change})

    async def retire(self, silent_since: datetime, keep: Collection[int]) -> int:
        """Mark done the sources silent since before ``silent_since`` (crashed: a live
        one saves every few seconds), but those in ``keep`` (still holding unpublished
        entries). A live source's next save sets ``done`` back to false."""
        query = {"done": False, "heartbeat_at": {"$lt": silent_since}, "_id": {"$nin": list(keep)}}
        with self._op("retire_relay_sources"):
            result = await self.collection.update_many(query, {"$set": {"done": True}})
        return result.modified_count

    async def load(self, *, include_done: bool) -> dict[int, Watermark]:
        query: Document = {} if include_done else {"done": False}
        marks: dict[int, Watermark] = {}
        with self._op("load_relay_watermarks"):
            async for doc in self.collection.find(query, {"through": 1, "unsettled": 1}):
                mark = _watermark(doc)
                if isinstance(doc.get("_id"), int) and mark is not None:
                    marks[doc["_id"]] = mark
        return marks


def _watermark(doc: Mapping[str, Any]) -> Watermark | None:
    through, unsettled = doc.get("through"), doc.get("unsettled")
    if not isinstance(through, int) or not isinstance(unsettled, list):
        return None
    return Watermark(through, frozenset(s for s in unsettled if isinstance(s, int)))


def unpublished_query(watermarks: Mapping[int, Watermark]) -> Document:
    """Documents with entries not known published: legacy ones (their marker set) and
    those whose relay key each source's watermark does not cover."""
    branches: list[Document] = [{OUTBOX_SINCE: {"$gt": _EPOCH}}]
    for source, mark in sorted(watermarks.items()):
        found = unpublished_filter(OUTBOX_RELAY, source, mark)
        branches.extend(found.get("$or", [found]))
    return {"$or": branches}


async def scan_outboxes(
    cache: AsyncCollection[Document],
    op: Callable[[str], AbstractContextManager[None]],
    older_than: datetime,
    limit: int,
    watermarks: Mapping[int, Watermark],
    counted_before: datetime | None = None,
) -> OutboxScan:
    """Count entries not known published (written before ``counted_before``, if given);
    return up to ``limit`` documents written at ``older_than`` or earlier (``_id``,
    ``user_id`` and the outbox fields only)."""
    projection = {"user_id": 1, OUTBOX: 1, OUTBOX_SINCE: 1, OUTBOX_RELAY: 1}
    fold = ScanFold(older_than, limit, counted_before)
    with op("scan_outboxes"):
        # Streamed: a large backlog (Kafka down for long) is counted, not held in memory.
        async for doc in cache.find(unpublished_query(watermarks), projection):
            fold.add(doc)
    return fold.result()


class ScanFold:
    """The scan's answer, built one document :func:`unpublished_query` found at a time."""

    def __init__(
        self, older_than: datetime, limit: int, counted_before: datetime | None = None
    ) -> None:
        self._older_than = older_than
        self._limit = limit
        self._counted_before = counted_before
        self._backlog = 0
        self._orphans: list[Document] = []
        self._keys: set[int] = set()

    def add(self, doc: Mapping[str, Any]) -> None:
        entries = doc.get(OUTBOX)
        room = len(self._orphans) < self._limit
        if not isinstance(entries, list) or not entries:
            if room and doc.get(OUTBOX_SINCE) is not None:
                self._orphans.append(dict(doc))  # a legacy marker alone: to be cleared
            return
        parsed = parse_relay_key(doc.get(OUTBOX_RELAY))
        if parsed is not None:
            self._keys.add(relay_key(*parsed))
        at = written_at(doc)
        if self._counted_before is None or at is None or at <= self._counted_before:
            self._backlog += len(entries)
        if room and (at is None or at <= self._older_than):
            self._orphans.append(dict(doc))

    def result(self) -> OutboxScan:
        return OutboxScan(self._backlog, self._orphans, frozenset(self._keys))


async def clear_outboxes(
    cache: AsyncCollection[Document],
    op: Callable[[str], AbstractContextManager[None]],
    docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
) -> None:
    """Remove published entries from each document's outbox (the orphan relay).

    Usually the outbox holds exactly the entries published: one atomic update empties
    it, its key and its marker. If another write changed it meanwhile, only the published
    ones are pulled (``$pullAll`` of the exact entries), and the key stays for the rest.
    Each step is one bulk command, whatever the number of documents.
    """
    if not docs:
        return
    emptied, pulled, unmarked = (
        [UpdateOne({"_id": c.doc_id, **c.condition}, c.change) for c in step]
        for step in clearing_steps(docs)
    )
    with op("clear_outbox"):
        if await _update_each(cache, emptied):
            return
        await _update_each(cache, pulled)
        await _update_each(cache, unmarked)


async def reject_entries(
    cache: AsyncCollection[Document],
    op: Callable[[str], AbstractContextManager[None]],
    docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
) -> None:
    """Move entries Kafka refused for good from each document's outbox to
    ``pass_status_outbox_rejected`` (``rejecting_steps``); two bulk commands."""
    moved, unmarked = (
        [UpdateOne({"_id": c.doc_id, **c.condition}, c.change) for c in step]
        for step in rejecting_steps(docs)
    )
    with op("reject_outbox_entries"):
        await _update_each(cache, moved)
        await _update_each(cache, unmarked)


async def _update_each(cache: AsyncCollection[Document], updates: list[UpdateOne]) -> bool:
    """Apply each update that matches (one unordered bulk); True if every one did."""
    if not updates:
        return True
    result = await cache.bulk_write(updates, ordered=False)
    return result.matched_count == len(updates)
