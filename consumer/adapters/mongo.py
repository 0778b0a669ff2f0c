"""MongoDB adapter (PyMongo's async API) for the cache and check-log collections.

Concurrency control: a write applies only if the user's ``passes`` array is exactly as it
was read (compared by the filter on MongoDB, by the service on FerretDB: see
``mongo_conditional``), so a concurrent change by another replica or by the refresher makes
the write match nothing; the caller then re-reads and re-evaluates. Fields this service
adds to a user document:

- ``next_check_at`` (date or null): earliest instant a pass changes by time alone;
- ``pass_status_checked_at`` (date): when this service last evaluated the document;
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
    ClientSideConditions,
    ConditionalUpdate,
    ConditionalUpdater,
    ServerSideConditions,
)
from consumer.domain.outbox import OUTBOX, OUTBOX_SINCE, clearing_steps
from consumer.domain.user_update import NEXT_CHECK_AT, UserUpdate, write_change
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
    """:class:`CacheStore` over two collections of one database."""

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
        """Apply ``update`` if the document is still as read (``write_change``); False on
        conflict."""
        write = write_change(read, update, now)
        async with self._writing():
            with self._op("write_user"):
                return await self._conditional.update_one(
                    ConditionalUpdate(write.doc_id, write.condition, write.change)
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
        emptied, pulled, unmarked = (
            [ConditionalUpdate(c.doc_id, c.condition, c.change) for c in step]
            for step in clearing_steps(docs)
        )
        async with self._writing():
            with self._op("clear_outbox"):
                if await self._conditional.update_each(emptied):
                    return
                await self._conditional.update_each(pulled)
                await self._conditional.update_each(unmarked)

    async def due_users(
        self, tick_at: datetime, shard: int, shards: int
    ) -> AsyncIterator[Document]:
        """Documents due at ``tick_at`` (or never evaluated), of one shard, streamed."""
        query: dict[str, Any] = {
            "$or": [{NEXT_CHECK_AT: {"$lte": tick_at}}, {NEXT_CHECK_AT: {"$exists": False}}]
        }
        if shards > 1:
            query["user_id"] = {"$mod": [shards, shard]}
        async for doc in self._stream("due_users", query, sort=False):
            yield doc

    async def all_users(self, user_id: int | None) -> AsyncIterator[Document]:
        """One user's document, or every document in ``user_id`` order, streamed."""
        query: dict[str, Any] = {} if user_id is None else {"user_id": user_id}
        async for doc in self._stream("all_users", query, sort=True):
            yield doc

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
        """Insert a check-log document; on an ``_id`` collision use the next free one."""
        body = dict(doc)
        for _ in range(1000):
            try:
                async with self._writing():
                    with self._op("insert_check_log"):
                        await self._check_log.insert_one(body)
            except DuplicateKeyError:
                body["_id"] = int(body["_id"]) + 1
                continue
            return int(body["_id"])
        raise StoreUnavailableError("no free check-log _id after 1000 attempts")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
