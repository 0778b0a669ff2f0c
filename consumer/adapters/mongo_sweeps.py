"""Sweep queries and the checkpoints of resumable full sweeps (MongoDB).

A full sweep reads users in ``user_id`` order in batches; after each batch it saves one
chunk: the check-log entries of that batch and the last ``user_id`` done. A chunk is one
document written in one operation, so progress and entries never disagree. A sweep that
stops (transient error, crash, rebalance) is resumed by whoever runs its tick again: after
the last finished batch, with the entries so far still in MongoDB (the check-log is built
from the chunks at the end). A user written after the last checkpoint is read again; its
document records the transitions this sweep made (``consumer.domain.sweep_log``), so its
entry is not lost. A finished sweep leaves a ``{_id: sweep_id}`` marker so a
redelivered tick does nothing, and its chunks are deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from consumer.adapters.mongo_indexes import IndexSpec
from consumer.domain.user_update import CHECKED_AT, NEXT_CHECK_AT

Document = dict[str, Any]
SWEEPS_COLLECTION = "pass_status_sweeps"
CHECKPOINT_INDEXES = (
    IndexSpec("sweep_seq_1", (("sweep", 1), ("seq", 1)), "reading a sweep's chunks", written=True),
    IndexSpec("done_at_1", (("done_at", 1),), "expiring finished sweeps", written=True),
    IndexSpec("saved_at_1", (("saved_at", 1),), "expiring abandoned sweeps", written=True),
)
# How long a finished sweep's marker (and an abandoned sweep's chunks) are kept. A marker
# only guards against its tick being delivered again after the sweep ended (a crash before
# the commit): minutes, not days. Kept a week, then pruned as later sweeps finish.
SWEEP_RECORDS_KEPT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """Where a full sweep stands: done, or the last chunk saved (``seq``, the last
    ``user_id`` whose evaluation is durable, ``None`` when none yet; ``read_all`` when
    every user was read and only the check-log remains to be written)."""

    done: bool
    seq: int
    last_user_id: Any
    read_all: bool = False


@dataclass(frozen=True, slots=True)
class SweepChunk:
    """One checkpoint of a full sweep: the check-log entries of a run of users (each
    ``{"u": user_id, "b": BSON size, "s": part size, "j": JSON}``), and, when
    ``batch_end``, the last ``user_id`` done: the sweep resumes after it. A checkpoint too
    large for one document is saved as several chunks; only the last is a ``batch_end``."""

    sweep_id: str
    seq: int
    last_user_id: Any
    batch_end: bool
    entries: list[Document]
    read_all: bool = False


def due_query(tick_at: datetime, shard: int, shards: int) -> dict[str, Any]:
    """Due at ``tick_at``: ``next_check_at`` reached; or unset (the refresher's contract:
    it unsets ``next_check_at`` when it writes ``passes``); or never evaluated (no
    ``pass_status_checked_at``). A user with every pass terminal holds ``NEVER_DUE``, not
    null, so the "unset" branch examines only what the refresher touched (an index keeps
    null and missing under one key). Each branch has its index. The shard is in the
    server's filter (``$mod`` on ``user_id``), applied to the due documents the indexes
    find, so a shard is sent only its own due documents."""
    due = {
        "$or": [
            {NEXT_CHECK_AT: {"$lte": tick_at}},
            {NEXT_CHECK_AT: {"$exists": False}},
            {CHECKED_AT: {"$exists": False}},
        ]
    }
    in_shard = shard_filter(shard, shards)
    return {"$and": [due, *in_shard]} if in_shard else due


# The BSON types a user_id may hold besides numbers and null, by the aliases both MongoDB
# and the local store accept; "array" is left out: MongoDB cannot answer it on an index.
NON_NUMBER_TYPES = ("string", "object", "binData", "objectId", "bool", "date", "regex", "timestamp")


def unreadable_query() -> dict[str, Any]:
    """Documents whose ``user_id`` is missing, null or not a number, in a shape the
    ``user_id`` index answers (MongoDB cannot use an index for ``$not: {$type: ...}``: it
    would scan the whole collection to find none). An array ``user_id`` is found by its
    elements' types, an empty one by equality."""
    return {
        "$or": [
            {"user_id": None},
            {"user_id": []},
            {"user_id": {"$type": list(NON_NUMBER_TYPES)}},
        ]
    }


def shard_filter(shard: int, shards: int) -> list[dict[str, Any]]:
    return [{"user_id": {"$mod": [shards, shard]}}] if shards > 1 else []


class SweepCheckpoints:
    """The checkpoint collection; ``op`` wraps each operation (metrics, typed errors)."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        op: Callable[[str], AbstractContextManager[None]],
    ) -> None:
        self._collection = collection
        self._op = op

    @property
    def collection(self) -> AsyncCollection[Document]:
        """The checkpoint collection (its indexes: :data:`CHECKPOINT_INDEXES`)."""
        return self._collection

    async def load(self, sweep_id: str) -> SweepProgress | None:
        """The progress of a full sweep, or ``None`` if it never saved any."""
        with self._op("load_sweep"):
            if await self._collection.find_one({"_id": sweep_id}) is not None:
                return SweepProgress(True, 0, None)
            last = await self._collection.find_one(
                {"sweep": sweep_id, "batch_end": True}, {"entries": 0}, sort=[("seq", -1)]
            )
            # Chunks after the last finished batch belong to a batch that is done again.
            after = -1 if last is None else int(last["seq"])
            await self._collection.delete_many({"sweep": sweep_id, "seq": {"$gt": after}})
        if last is None:
            return None
        return SweepProgress(
            False, int(last["seq"]), last.get("last_user_id"), bool(last.get("read_all"))
        )

    async def save(self, chunk: SweepChunk) -> None:
        """Save one checkpoint (idempotent: a chunk saved again replaces itself)."""
        body = {
            "sweep": chunk.sweep_id,
            "seq": chunk.seq,
            "last_user_id": chunk.last_user_id,
            "batch_end": chunk.batch_end,
            "entries": chunk.entries,
            "read_all": chunk.read_all,
            "saved_at": datetime.now(UTC),
        }
        with self._op("save_sweep_chunk"):
            await self._collection.replace_one(
                {"_id": f"{chunk.sweep_id}/{chunk.seq:010d}"}, body, upsert=True
            )

    async def entries(self, sweep_id: str) -> AsyncIterator[list[Document]]:
        """The entries of a sweep's chunks, chunk by chunk, in order."""
        cursor = self._collection.find({"sweep": sweep_id}, {"entries": 1}, batch_size=4)
        cursor = cursor.sort("seq", ASCENDING)
        try:
            while True:
                with self._op("sweep_entries"):
                    try:
                        chunk = await cursor.next()
                    except StopAsyncIteration:
                        return
                yield list(chunk.get("entries") or [])
        finally:
            await cursor.close()

    async def finish(self, sweep_id: str) -> None:
        """Record the sweep as done (a redelivered tick does nothing) and drop its chunks;
        prune the records older than :data:`SWEEP_RECORDS_KEPT` (markers, and chunks of
        sweeps never resumed), so the collection does not grow with every sweep."""
        now = datetime.now(UTC)
        with self._op("finish_sweep"):
            await self._collection.update_one(
                {"_id": sweep_id}, {"$set": {"done_at": now}}, upsert=True
            )
            await self._collection.delete_many({"sweep": sweep_id})
            cutoff = now - SWEEP_RECORDS_KEPT
            await self._collection.delete_many({"done_at": {"$lt": cutoff}})
            await self._collection.delete_many({"saved_at": {"$lt": cutoff}})
