"""MongoDB adapter (PyMongo's async API) for the cache and check-log collections.

Concurrency control: a write applies only if the user's ``passes`` array is exactly as it
was read: ``update_one({_id, passes: <as read>}, change)``, which the server matches and
applies atomically. A concurrent change by another replica or by the refresher makes the
write match nothing; the caller then re-reads and re-evaluates. ``tests/store`` states
every server behaviour relied on here. A batch's writes go in one unordered bulk
(:mod:`consumer.adapters.mongo_bulk`). The fields this service adds to a user document
are listed in docs/architecture.md ("Fields this service adds to a user document").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import bson
import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo_bulk import write_users
from consumer.adapters.mongo_commands import CommandCounter
from consumer.adapters.mongo_indexes import CACHE_INDEXES, ensure_indexes
from consumer.adapters.mongo_outbox import (
    RELAYS_COLLECTION,
    RelaySources,
    clear_outboxes,
    reject_entries,
    scan_outboxes,
)
from consumer.adapters.mongo_sweeps import (
    CHECKPOINT_INDEXES,
    SWEEPS_COLLECTION,
    SweepCheckpoints,
    SweepChunk,
    SweepProgress,
    due_query,
    shard_filter,
    unreadable_query,
)
from consumer.adapters.store_ports import OutboxScan
from consumer.domain.rules import read_int
from consumer.domain.user_update import (
    CHECKED_AT,
    NEVER_DUE,
    NEXT_CHECK_AT,
    UserUpdate,
    write_change,
)
from consumer.domain.watermarks import Watermark
from consumer.errors import (
    ConfigError,
    DocumentRejectedError,
    PassStatusError,
    StoreRefusedError,
    StoreUnavailableError,
)
from consumer.policy import Fault, classify
from consumer.settings import Settings

Document = dict[str, Any]


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


class MongoCacheStore:
    """:class:`CacheStore` over the cache, check-log and sweep-checkpoint collections."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        # DATETIME_AUTO: a date outside datetime's range decodes (as DatetimeMS) instead of
        # failing the whole read; the rules then report it as unreadable.
        self._codec: CodecOptions[Document] = CodecOptions(
            tz_aware=True, tzinfo=UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
        )
        db = client.get_database(
            settings.mongodb_database,
            codec_options=self._codec,
            write_concern=_write_concern(settings.mongodb_write_concern),
        )
        self._client = client
        self._cache: AsyncCollection[Document] = db[settings.collection_cache]
        # Undecoded documents, so a batch read can weigh each one before keeping it.
        self._raw_cache = cast(
            "AsyncCollection[RawBSONDocument]",
            db.get_collection(
                settings.collection_cache,
                codec_options=CodecOptions(document_class=RawBSONDocument),
            ),
        )
        self._check_log: AsyncCollection[Document] = db[settings.collection_check_log]
        self._checkpoints = SweepCheckpoints(db[SWEEPS_COLLECTION], self._op)
        self._relays = RelaySources(db[RELAYS_COLLECTION], self._op)
        self._metrics = metrics
        self._batch_size = settings.sweep_batch_size
        self._read_budget = settings.read_batch_max_bytes
        self._index_timeout_s = settings.mongodb_index_timeout_ms / 1000
        self._timers: dict[str, Any] = {}

    @contextmanager
    def _op(self, operation: str, user_id: int | None = None) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except DuplicateKeyError:
            raise  # insert_check_log's idempotence reads it
        except (BSONError, PyMongoError) as exc:
            self._metrics.mongodb_errors.labels(operation).inc()
            raise store_error(operation, user_id, exc) from exc
        finally:
            timer = self._timers.get(operation)
            if timer is None:  # a child per operation, looked up once (a batch read: per document)
                timer = self._timers[operation] = self._metrics.mongodb_duration.labels(operation)
            timer.observe(time.perf_counter() - started)

    async def ping(self) -> None:
        with self._op("ping"):
            await self._client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create the indexes the service relies on, or use existing ones that serve the
        same lookups; raise :class:`IndexConflictError` on a clash (``mongo_indexes``).

        The first start on a large collection builds them: minutes at millions of users, far
        past the socket timeout meant for hot operations. The builds get their own deadline
        (``mongodb_index_timeout_ms``; the driver's operation timeout replaces the socket
        timeout within it)."""
        with pymongo.timeout(self._index_timeout_s):
            await ensure_indexes(self._cache, CACHE_INDEXES, self._op)
            await ensure_indexes(self._checkpoints.collection, CHECKPOINT_INDEXES, self._op)

    async def find_user(self, user_id: int) -> Document | None:
        with self._op("find_user", user_id):
            return await self._cache.find_one({"user_id": user_id})

    async def find_users(self, user_ids: Sequence[int]) -> AsyncIterator[dict[int, Document]]:
        """The documents of many users (the first one per user) from one query, in rounds.

        A round holds at most ``read_batch_max_bytes`` of documents (as BSON), or a single
        document larger than that. A caller that is done with a round before asking for the
        next therefore holds the budget plus the one document being weighed, however large
        the users are; besides, the driver buffers one reply of the server (at most 16 MB).
        """
        seen: set[int] = set()
        batch: dict[int, Document] = {}
        size = 0
        ids = list(user_ids)
        # The first reply holds them all (up to the server's 16 MB), not the driver's
        # default 101 and a getMore round trip per further batch.
        cursor = self._raw_cache.find({"user_id": {"$in": ids}}, batch_size=len(ids) + 1)
        try:
            while True:
                with self._op("find_users"):
                    try:
                        raw = await cursor.next()
                    except StopAsyncIteration:
                        break
                    doc = bson.decode(raw.raw, self._codec)
                # 42.0 (the Node.js refresher's numbers are doubles) is user 42: the
                # query matched it, and the caller looks the user up by 42.
                user_id = read_int(doc.get("user_id"))
                if user_id is None or user_id in seen:
                    continue
                if batch and size + len(raw.raw) > self._read_budget:
                    yield batch
                    batch, size = {}, 0
                seen.add(user_id)
                batch[user_id] = doc
                size += len(raw.raw)
            if batch:
                yield batch
        finally:
            await cursor.close()

    async def write_user(self, read: Mapping[str, Any], update: UserUpdate, now: datetime) -> bool:
        """Apply ``update`` if the document is still as read (``write_change``); False on
        conflict.

        Raises :class:`DocumentRejectedError` if MongoDB refuses the result (over 16 MB)."""
        write = write_change(read, update, now)
        with self._op("write_user", read_int(read.get("user_id"))):
            result = await self._cache.update_one(
                {"_id": write.doc_id, **write.condition}, write.change
            )
        return result.matched_count == 1

    async def write_users(
        self, writes: Sequence[tuple[Mapping[str, Any], UserUpdate]], now: datetime
    ) -> list[bool | Exception]:
        """Each update in one unordered bulk: :func:`consumer.adapters.mongo_bulk.write_users`."""
        return await write_users(self._cache, self._op, writes, now, self.write_user, store_error)

    async def clear_outbox(self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> None:
        """Remove published entries from each document's outbox (``mongo_outbox``)."""
        await clear_outboxes(self._cache, self._op, docs)

    async def reject_outbox_entries(
        self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]
    ) -> None:
        """Move entries Kafka refused for good aside (``mongo_outbox``)."""
        await reject_entries(self._cache, self._op, docs)

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
        """Documents whose ``user_id`` is missing, null or not a number (shard 0's), found
        on the ``user_id`` index (:func:`unreadable_query`)."""
        if shard != 0:
            return
        async for doc in self._stream("all_users", unreadable_query(), sort=False):
            yield doc

    async def mark_unreadable(self, read: Mapping[str, Any], now: datetime) -> bool:
        """Mark a document the rules cannot read as evaluated (``next_check_at`` never: not
        due until the refresher rewrites it), if its ``user_id`` is still as read."""
        user_id = read.get("user_id", _MISSING)
        condition = {"user_id": {"$exists": False} if user_id is _MISSING else user_id}
        change = {"$set": {CHECKED_AT: now, NEXT_CHECK_AT: NEVER_DUE}}
        with self._op("mark_unreadable"):
            result = await self._cache.update_one({"_id": read["_id"], **condition}, change)
        return result.matched_count == 1

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

    async def scan_outboxes(
        self,
        older_than: datetime,
        limit: int,
        watermarks: Mapping[int, Watermark],
        counted_before: datetime | None = None,
    ) -> OutboxScan:
        """Count entries not known published; return up to ``limit`` documents written at
        ``older_than`` or earlier. One read, on the indexed relay key and legacy marker:
        only documents with a backlog are read (``mongo_outbox.scan_outboxes``)."""
        return await scan_outboxes(
            self._cache, self._op, older_than, limit, watermarks, counted_before
        )

    async def register_relay_source(self, token: str, host: str, now: datetime) -> int:
        return await self._relays.register(token, host, now)

    async def save_relay_watermark(
        self, source: int, mark: Watermark, now: datetime, *, done: bool
    ) -> None:
        await self._relays.save(source, mark, now, done=done)

    async def relay_watermarks(self, *, include_done: bool) -> dict[int, Watermark]:
        return await self._relays.load(include_done=include_done)

    async def retire_relay_sources(self, silent_since: datetime, keep: Collection[int]) -> int:
        return await self._relays.retire(silent_since, keep)

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int:
        """Insert a check-log document at its ``_id``, idempotently: if that ``_id`` holds
        the same document (a retried write), nothing is inserted; if it holds another
        check's, the next ``_id`` is tried. Returns the ``_id`` the document has."""
        body = dict(doc)
        for _ in range(1000):
            try:
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


def store_error(operation: str, user_id: int | None, exc: Exception) -> PassStatusError:
    """``exc`` (PyMongo's or BSON's) as this package's error of the fault
    :func:`consumer.policy.classify` finds, raised from it (so its code stays readable)."""
    verdict = classify(exc)
    detail = f"MongoDB {operation} failed (code {verdict.code}): {str(exc)[:300]}"
    if verdict.fault is Fault.DOCUMENT:
        who = "a document" if user_id is None else f"user {user_id}'s document"
        message = f"MongoDB {operation}: {who} was refused (code {verdict.code}): {str(exc)[:300]}"
        return DocumentRejectedError(message, user_id=user_id, code=verdict.code)
    if verdict.fault is Fault.STORE_REFUSED:
        return StoreRefusedError(detail)
    if verdict.fault is Fault.CONFIG:
        return ConfigError(detail)
    return StoreUnavailableError(detail)


def _same_check_log(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return {k: v for k, v in stored.items() if k != "_id"} == {
        k: v for k, v in wanted.items() if k != "_id"
    }


_MISSING = object()
