"""Relay of status-change events from document outboxes to Kafka.

The lifecycle and its invariants are in :mod:`consumer.domain.outbox`; this is its I/O:
publish, wait for the broker's acknowledgements, then clear exactly what was
acknowledged. A crash in between leaves the entries, published again with the same
``event_id``.

Order (invariant I4): within this process one relay at a time handles a document (a
ticket-used batch, a tick's sweep and the orphan relay share this object), each
publishes the outbox as its writer saw it, head first, and skips entries that a relay
of the same document acknowledged while it waited. So a sweep that appended
``USING -> EXPIRED`` behind a batch's pending ``USABLE -> USING`` never publishes
before that batch's relay is done.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from consumer.adapters.kafka import OutRecord, Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import CacheStore
from consumer.domain.outbox import pending_outbox
from consumer.logs import get_logger
from consumer.service.doclocks import DocumentLocks

log = get_logger(__name__)

Pending = Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]


@dataclass(slots=True)
class _Relayed:
    """What relays of one document acknowledged while others waited for it."""

    acknowledged: set[str] = field(default_factory=set)


class OutboxRelay:
    def __init__(
        self, store: CacheStore, publisher: Publisher, metrics: Metrics, topic: str
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic
        self._locks: DocumentLocks[_Relayed] = DocumentLocks(_Relayed)

    async def relay(self, pending: Pending) -> int:
        """Publish each document's pending entries, then clear them. Returns events published."""
        docs = [(doc_id, entries) for doc_id, entries in pending if entries]
        if not docs:
            return 0
        async with self._holding(docs) as relayed:
            records: list[OutRecord] = []
            published: list[tuple[_Relayed, str]] = []
            for doc_id, entries in docs:
                state = relayed[_key(doc_id)]
                for entry in entries:
                    event_id = str(entry["event_id"])
                    if event_id in state.acknowledged:
                        continue
                    records.append(self._record(entry))
                    published.append((state, event_id))
            await self._publisher.publish(records)
            for state, event_id in published:
                state.acknowledged.add(event_id)
            self._metrics.outbox_published.inc(len(records))
            await self._store.clear_outbox(docs)
        return len(records)

    @contextlib.asynccontextmanager
    async def _holding(self, docs: Pending) -> AsyncIterator[dict[Hashable, _Relayed]]:
        async with self._locks.holding([_key(doc_id) for doc_id, _ in docs]) as states:
            yield states

    def _record(self, entry: Mapping[str, Any]) -> OutRecord:
        return OutRecord(
            topic=self._topic,
            key=str(entry["user_id"]).encode(),
            value=orjson.dumps(_public(entry)),
        )

    async def relay_orphans(self, now: datetime, older_than: timedelta, limit: int = 500) -> int:
        """Publish outbox entries left behind (by a crash) for longer than ``older_than``.

        Returns the number of events still waiting in outboxes when the scan was made (the
        backlog gauge's value), counted in the same read that finds the orphans.
        """
        started = time.perf_counter()
        scan = await self._store.scan_outboxes(now - older_than, limit)
        docs = scan.orphans
        published = await self.relay([(d["_id"], pending_outbox(d)) for d in docs])
        # Documents whose outbox was already empty only need their marker cleared.
        await self._store.clear_outbox([(d["_id"], []) for d in docs if not pending_outbox(d)])
        if published:
            log.warning(
                "outbox_orphans_published",
                events=published,
                documents=len(docs),
                seconds=round(time.perf_counter() - started, 3),
            )
        return scan.backlog


def _key(doc_id: Any) -> tuple[str, str]:
    """A sortable key of a document ``_id`` (ids of mixed types are not comparable)."""
    return (type(doc_id).__name__, str(doc_id))


def _public(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The event as published: exactly the schema's fields."""
    return {k: entry[k] for k in _EVENT_FIELDS if k in entry}


_EVENT_FIELDS = (
    "event_id",
    "user_id",
    "pass_uuid",
    "from_status",
    "to_status",
    "status_log",
    "effective_at",
    "detected_at",
    "cause",
)
