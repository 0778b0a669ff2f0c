"""MongoDB adapter (PyMongo's async API) for the cache and check-log collections.

Concurrency control: a write applies only if the user's ``passes`` array is exactly as it
was read (compared by the filter on MongoDB, by the service on FerretDB: see
``mongo_conditional``), so a concurrent change by another replica or by the refresher makes
the write match nothing; the caller then re-reads and re-evaluates. Fields this service
adds to a user document:

- ``next_check_at`` (date or null): earliest instant a pass changes by time alone;
- ``pass_status_checked_at`` (date): when this service last evaluated the document (also
  set on a document it cannot read, so that it stops being "never evaluated"); absent
  means never evaluated: due, found through its own index;
- ``pass_status_rev`` (int): incremented by every write of this service (diagnostics);
- ``pass_status_outbox`` (array): status-change events written with their transition and
  not yet confirmed published; ``pass_status_outbox_since`` (date or null): when the
  oldest of them was written, indexed so orphans are found without a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo_commands import CommandCounter
from consumer.adapters.mongo_conditional import (
    ABSENT,
    ClientSideConditions,
    ConditionalUpdate,
    ConditionalUpdater,
    ServerSideConditions,
)
from consumer.adapters.mongo_sweeps import (
    SWEEPS_COLLECTION,
    SweepCheckpoints,
    SweepChunk,
    SweepProgress,
    due_query,
    shard_filter,
)
from consumer.domain.user_update import (
    CHECKED_AT,
    NEXT_CHECK_AT,
    OUTBOX,
    OUTBOX_SINCE,
    REVISION,
    UserUpdate,
)
from consumer.errors import StoreUnavailableError
from consumer.settings import Settings

Document = dict[str, Any]


class CacheStore(Protocol):
    """What the service needs from MongoDB."""

    async def find_user(self, user_id: int) -> Document | None: ...
    async def find_users(self, user_ids: Sequence[int]) -> dict[int, Document]: ...
    async def write_user(
        self, read: Mapping[str, Any], update: UserUpdate, now: datetime
    ) -> bool: ...
    async def clear_outbox(
        self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]
    ) -> None: ...
    def due_users(self, tick_at: datetime, shard: int, shards: int) -> AsyncIterator[Document]: ...
    def all_users(self, user_id: int | None) -> AsyncIterator[Document]: ...
    async def scan_outboxes(self, older_than: datetime, limit: int) -> OutboxScan: ...
    async def ping(self) -> None: ...
    async def insert_check_log(self, doc: Mapping[str, Any]) -> int: ...
    # Sweeps (issues 12 and 14): one user's due sweep, shards, resumable full sweeps.
    def due_user(self, tick_at: datetime, user_id: int) -> AsyncIterator[Document]: ...
    def users_after(
        self, after: int | None, shard: int, shards: int
    ) -> AsyncIterator[Document]: ...
    def unreadable_users(self, shard: int) -> AsyncIterator[Document]: ...
    async def mark_unreadable(self, read: Mapping[str, Any], now: datetime) -> bool: ...
    async def load_sweep(self, sweep_id: str) -> SweepProgress | None: ...
    async def save_sweep_chunk(self, chunk: SweepChunk) -> None: ...
    def sweep_entries(self, sweep_id: str) -> AsyncIterator[list[Document]]: ...
    async def finish_sweep(self, sweep_id: str) -> None: ...


def make_client(settings: Settings, metrics: Metrics | None = None) -> AsyncMongoClient[Document]:
    """A client with the settings' timeouts, TLS and write concern, and tz-aware dates;
    with ``metrics``, every command it sends is counted."""
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": settings.mongodb_timeout_ms,
        "connectTimeoutMS": settings.mongodb_timeout_ms,
        "socketTimeoutMS": max(settings.mongodb_timeout_ms, 10000),
        "tz_aware": True,
        "tzinfo": UTC,
        "datetime_conversion": DatetimeConversion.DATETIME_AUTO,
        "appname": "pass-status",
    }
    if settings.mongodb_tls_cafile:
        options["tls"] = True
        options["tlsCAFile"] = settings.mongodb_tls_cafile
    if metrics is not None:
        options["event_listeners"] = [CommandCounter(metrics)]
    return AsyncMongoClient(settings.mongodb_uri, **options)


def _write_concern(value: str) -> WriteConcern:
    return WriteConcern(w=int(value) if value.isdigit() else value)


@dataclass(frozen=True, slots=True)
class OutboxScan:
    """Every pending outbox at one look: the backlog, and the oldest documents to relay."""

    backlog: int
    orphans: list[Document]


class MongoCacheStore:
    """:class:`CacheStore` over the cache, check-log and sweep-checkpoint collections."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        db = client.get_database(
            settings.mongodb_database,
            # DATETIME_AUTO: a date outside datetime's range decodes (as DatetimeMS) instead
            # of failing the whole read; the rules then report it as unreadable.
            codec_options=CodecOptions(
                tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
            ),
            write_concern=_write_concern(settings.mongodb_write_concern),
        )
        self._client = client
        self._cache: AsyncCollection[Document] = db[settings.collection_cache]
        self._check_log: AsyncCollection[Document] = db[settings.collection_check_log]
        self._checkpoints = SweepCheckpoints(db[SWEEPS_COLLECTION], self._op)
        self._metrics = metrics
        self._batch_size = settings.sweep_batch_size
        # FerretDB 1.24 does not apply a conditional update atomically: two updates of one
        # document racing each other can both match, the later undoing the earlier. Within
        # this process its writes are therefore serialised (its SQLite backend serialises
        # writes anyway, so little is lost). Across replicas nothing can help: on FerretDB,
        # run one replica. MongoDB needs none of this.
        self._write_lock: asyncio.Lock | None = None
        self._conditional: ConditionalUpdater = ServerSideConditions(self._cache)

    async def detect_server(self) -> str:
        """Identify the server; serialise this process's writes on FerretDB."""
        with self._op("build_info"):
            info = await self._client.admin.command("buildInfo")
        if "ferretdbVersion" in info:
            self._write_lock = asyncio.Lock()
            self._conditional = ClientSideConditions(self._cache)
            return f"FerretDB {info.get('ferretdbVersion', '?')}"
        return f"MongoDB {info.get('version', '?')}"

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    @contextmanager
    def _op(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except DuplicateKeyError:
            raise
        except PyMongoError as exc:
            self._metrics.mongodb_errors.labels(operation).inc()
            raise StoreUnavailableError(f"MongoDB {operation} failed: {exc}") from exc
        finally:
            self._metrics.mongodb_duration.labels(operation).observe(time.perf_counter() - started)

    async def ping(self) -> None:
        with self._op("ping"):
            await self._client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create the indexes the service relies on; a no-op when they exist."""
        with self._op("create_index"):
            await self._cache.create_index([("user_id", ASCENDING)], name="user_id_1")
            await self._cache.create_index([(NEXT_CHECK_AT, ASCENDING)], name="next_check_at_1")
            await self._cache.create_index([(OUTBOX_SINCE, ASCENDING)], name="outbox_since_1")
            # Never-evaluated documents are due: found by this marker's absence.
            await self._cache.create_index([(CHECKED_AT, ASCENDING)], name="checked_at_1")
            await self._checkpoints.ensure_index()

    async def find_user(self, user_id: int) -> Document | None:
        with self._op("find_user"):
            return await self._cache.find_one({"user_id": user_id})

    async def find_users(self, user_ids: Sequence[int]) -> dict[int, Document]:
        """The documents of many users in one round trip (the first one per user)."""
        found: dict[int, Document] = {}
        with self._op("find_users"):
            async for doc in self._cache.find({"user_id": {"$in": list(user_ids)}}):
                user_id = doc.get("user_id")
                if isinstance(user_id, int) and user_id not in found:
                    found[user_id] = doc
        return found

    async def write_user(self, read: Mapping[str, Any], update: UserUpdate, now: datetime) -> bool:
        """Apply ``update`` if the document's passes are still as read; False on conflict."""
        sets: dict[str, Any] = {NEXT_CHECK_AT: update.next_check_at, CHECKED_AT: now}
        for first_use in update.first_use_sets:
            sets[f"passes.{first_use.index}.payload.first_use"] = first_use.first_use
        for transition in update.evaluation.transitions:
            sets[f"passes.{transition.index}.status"] = transition.to_status
        change: dict[str, Any] = {"$set": sets, "$inc": {REVISION: 1}}
        if update.outbox:
            change["$push"] = {OUTBOX: {"$each": list(update.outbox)}}
            if read.get(OUTBOX_SINCE) is None:
                sets[OUTBOX_SINCE] = now
        async with self._writing():
            with self._op("write_user"):
                return await self._conditional.update_one(
                    ConditionalUpdate(read["_id"], _unchanged_condition(read), change)
                )

    async def clear_outbox(self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> None:
        """Remove published entries from each document's outbox.

        Usually the outbox holds exactly the entries published: one atomic update empties
        it and its marker. If another write added entries meanwhile, only the published
        ones are pulled (``$pullAll`` with the exact entries: FerretDB 1.24 matches but does
        not modify with a conditional ``$pull``), and the marker stays for the rest.
        """
        if not docs:
            return
        emptied = [
            ConditionalUpdate(doc_id, {OUTBOX: list(entries)}, _EMPTY_OUTBOX)
            for doc_id, entries in docs
        ]
        async with self._writing():
            with self._op("clear_outbox"):
                if await self._conditional.update_each(emptied):
                    return
                await self._conditional.update_each(
                    [
                        ConditionalUpdate(doc_id, {}, {"$pullAll": {OUTBOX: list(entries)}})
                        for doc_id, entries in docs
                        if entries
                    ]
                )
                await self._conditional.update_each(
                    [ConditionalUpdate(doc_id, {OUTBOX: []}, _NO_SINCE) for doc_id, _ in docs]
                )

    async def due_users(
        self, tick_at: datetime, shard: int, shards: int
    ) -> AsyncIterator[Document]:
        """Documents due at ``tick_at`` of one shard, streamed (:func:`due_query`)."""
        async for doc in self._stream("due_users", due_query(tick_at, shard, shards), sort=False):
            yield doc

    async def due_user(self, tick_at: datetime, user_id: int) -> AsyncIterator[Document]:
        """The document of ``user_id`` if it is due at ``tick_at``."""
        query = {"$and": [due_query(tick_at, 0, 1), {"user_id": user_id}]}
        async for doc in self._stream("due_users", query, sort=False):
            yield doc

    async def all_users(self, user_id: int | None) -> AsyncIterator[Document]:
        """One user's document, or every document in ``user_id`` order, streamed."""
        query: dict[str, Any] = {} if user_id is None else {"user_id": user_id}
        async for doc in self._stream("all_users", query, sort=True):
            yield doc

    async def users_after(
        self, after: int | None, shard: int, shards: int
    ) -> AsyncIterator[Document]:
        """Documents with a numeric ``user_id`` above ``after`` (all when ``None``) in
        one shard, in ``user_id`` order: what a full sweep resumed after ``after`` reads."""
        user_id: dict[str, Any] = {"$type": "number"} if after is None else {"$gt": after}
        query: dict[str, Any] = {"$and": [{"user_id": user_id}, *shard_filter(shard, shards)]}
        async for doc in self._stream("all_users", query, sort=True):
            yield doc

    async def unreadable_users(self, shard: int) -> AsyncIterator[Document]:
        """Documents whose ``user_id`` is not a number (or is missing); shard 0's."""
        if shard != 0:
            return
        query = {"user_id": {"$not": {"$type": "number"}}}
        async for doc in self._stream("all_users", query, sort=False):
            yield doc

    async def mark_unreadable(self, read: Mapping[str, Any], now: datetime) -> bool:
        """Mark a document the rules cannot read as evaluated (``next_check_at`` null: not
        due until the refresher rewrites it), if its ``user_id`` is still as read."""
        user_id = read.get("user_id", _MISSING)
        condition = {"user_id": ABSENT if user_id is _MISSING else user_id}
        change = {"$set": {CHECKED_AT: now, NEXT_CHECK_AT: None}}
        async with self._writing():
            with self._op("mark_unreadable"):
                return await self._conditional.update_one(
                    ConditionalUpdate(read["_id"], condition, change)
                )

    async def load_sweep(self, sweep_id: str) -> SweepProgress | None:
        return await self._checkpoints.load(sweep_id)

    async def save_sweep_chunk(self, chunk: SweepChunk) -> None:
        await self._checkpoints.save(chunk)

    def sweep_entries(self, sweep_id: str) -> AsyncIterator[list[Document]]:
        return self._checkpoints.entries(sweep_id)

    async def finish_sweep(self, sweep_id: str) -> None:
        await self._checkpoints.finish(sweep_id)

    async def _stream(
        self, operation: str, query: dict[str, Any], *, sort: bool
    ) -> AsyncIterator[Document]:
        cursor = self._cache.find(query, batch_size=self._batch_size)
        if sort:
            cursor = cursor.sort("user_id", ASCENDING)
        try:
            while True:
                with self._op(operation):
                    try:
                        doc = await cursor.next()
                    except StopAsyncIteration:
                        return
                yield doc
        finally:
            await cursor.close()

    async def scan_outboxes(self, older_than: datetime, limit: int) -> OutboxScan:
        """Count pending outbox entries; return up to ``limit`` documents pending since
        ``older_than`` or earlier (``_id``, ``user_id`` and the outbox fields only).

        One read serves both the backlog gauge and the orphan relay: a range on the indexed
        marker on MongoDB, so only documents with a backlog are read (on FerretDB every
        query but one on ``_id`` alone is a scan, and this halves their number).
        """
        projection = {"user_id": 1, OUTBOX: 1, OUTBOX_SINCE: 1}
        backlog = 0
        orphans: list[Document] = []
        with self._op("scan_outboxes"):
            async for doc in self._cache.find({OUTBOX_SINCE: {"$gt": _EPOCH}}, projection):
                entries = doc.get(OUTBOX)
                backlog += len(entries) if isinstance(entries, list) else 0
                since = doc.get(OUTBOX_SINCE)
                if len(orphans) < limit and isinstance(since, datetime) and since <= older_than:
                    orphans.append(doc)
        return OutboxScan(backlog, orphans)

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int:
        """Insert a check-log document at its ``_id``, idempotently: if that ``_id`` holds
        the same document (a retried write), nothing is inserted; if it holds another
        check's, the next ``_id`` is tried. Returns the ``_id`` the document has."""
        body = dict(doc)
        for _ in range(1000):
            try:
                async with self._writing():
                    with self._op("insert_check_log"):
                        await self._check_log.insert_one(body)
            except DuplicateKeyError:
                with self._op("insert_check_log"):
                    existing = await self._check_log.find_one({"_id": body["_id"]})
                if existing is not None and _same_check_log(existing, body):
                    return int(body["_id"])
                body["_id"] = int(body["_id"]) + 1
                continue
            return int(body["_id"])
        raise StoreUnavailableError("no free check-log _id after 1000 attempts")


def _same_check_log(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return {k: v for k, v in stored.items() if k != "_id"} == {
        k: v for k, v in wanted.items() if k != "_id"
    }


def _unchanged_condition(read: Mapping[str, Any]) -> dict[str, Any]:
    """Match the document only while its ``passes`` are exactly as they were read."""
    passes = read.get("passes", _MISSING)
    return {"passes": ABSENT if passes is _MISSING else passes}


_MISSING = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EMPTY_OUTBOX: Document = {"$set": {OUTBOX: [], OUTBOX_SINCE: None}}
_NO_SINCE: Document = {"$set": {OUTBOX_SINCE: None}}
