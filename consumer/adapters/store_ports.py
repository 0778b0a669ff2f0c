"""The store's ports: what each part of the service needs from MongoDB.

Each service object depends on the narrowest role it uses, so a fake (``tests/unit/fakes.py``)
or another adapter implements only what it stands in for. :class:`CacheStore` is every role
at once: what :class:`consumer.adapters.mongo.MongoCacheStore` provides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from consumer.adapters.mongo_sweeps import SweepChunk, SweepProgress
from consumer.domain.user_update import UserUpdate
from consumer.domain.watermarks import Watermark

Document = dict[str, Any]
OutboxDocs = Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]


@dataclass(frozen=True, slots=True)
class OutboxScan:
    """Every outbox not known published at one look: the backlog (entries), the oldest
    documents to relay, and the relay keys those documents hold."""

    backlog: int
    orphans: list[Document]
    unpublished_keys: frozenset[int] = frozenset()


class UserStore(Protocol):
    """Read users' documents and write them conditionally (optimistic concurrency)."""

    async def find_user(self, user_id: int) -> Document | None: ...
    def find_users(self, user_ids: Sequence[int]) -> AsyncIterator[dict[int, Document]]: ...
    async def write_user(
        self, read: Mapping[str, Any], update: UserUpdate, now: datetime
    ) -> bool: ...
    async def write_users(
        self, writes: Sequence[tuple[Mapping[str, Any], UserUpdate]], now: datetime
    ) -> list[bool | Exception]: ...


class OutboxStore(Protocol):
    """Clear, move aside and scan the status-change outboxes of users' documents; keep
    the relay sources' watermarks (``consumer.domain.watermarks``)."""

    async def clear_outbox(self, docs: OutboxDocs) -> None: ...
    async def reject_outbox_entries(self, docs: OutboxDocs) -> None: ...
    async def scan_outboxes(
        self,
        older_than: datetime,
        limit: int,
        watermarks: Mapping[int, Watermark],
        counted_before: datetime | None = None,
    ) -> OutboxScan: ...
    async def register_relay_source(self, token: str, host: str, now: datetime) -> int: ...
    async def save_relay_watermark(
        self, source: int, mark: Watermark, now: datetime, *, done: bool
    ) -> None: ...
    async def relay_watermarks(self, *, include_done: bool) -> dict[int, Watermark]: ...
    async def retire_relay_sources(self, silent_since: datetime, keep: Collection[int]) -> int: ...


class CheckLogStore(Protocol):
    """Insert check-log documents idempotently."""

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int: ...


class SweepStore(UserStore, Protocol):
    """Find the users a sweep evaluates (and one user); keep the checkpoints of resumable
    full sweeps."""

    def due_users(self, tick_at: datetime, shard: int, shards: int) -> AsyncIterator[Document]: ...
    def due_user(self, tick_at: datetime, user_id: int) -> AsyncIterator[Document]: ...
    def all_users(self, user_id: int | None) -> AsyncIterator[Document]: ...
    def users_after(
        self, after: int | None, shard: int, shards: int
    ) -> AsyncIterator[Document]: ...
    def unreadable_users(self, shard: int) -> AsyncIterator[Document]: ...
    async def mark_unreadable(self, read: Mapping[str, Any], now: datetime) -> bool: ...
    async def load_sweep(self, sweep_id: str) -> SweepProgress | None: ...
    async def save_sweep_chunk(self, chunk: SweepChunk) -> None: ...
    def sweep_entries(self, sweep_id: str) -> AsyncIterator[list[Document]]: ...
    async def finish_sweep(self, sweep_id: str) -> None: ...


class CacheStore(SweepStore, OutboxStore, CheckLogStore, Protocol):
    """Every role, plus a health check."""

    async def ping(self) -> None: ...
