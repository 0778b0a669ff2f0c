"""Relay of status-change events from document outboxes to Kafka.

An event is first made durable in the user's document (with its transition); it is then
published, and removed from the outbox only after the broker acknowledged it. A crash in
between leaves the entry, which is published again with the same ``event_id``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from consumer.adapters.kafka import OutRecord, Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import CacheStore
from consumer.domain.user_update import pending_outbox
from consumer.logs import get_logger

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self, store: CacheStore, publisher: Publisher, metrics: Metrics, topic: str
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic

    async def relay(self, pending: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> int:
        """Publish each document's pending entries, then clear them. Returns events published."""
        records: list[OutRecord] = []
        cleared: list[tuple[Any, Sequence[Mapping[str, Any]]]] = []
        for doc_id, entries in pending:
            if not entries:
                continue
            records.extend(
                OutRecord(
                    topic=self._topic,
                    key=str(entry["user_id"]).encode(),
                    value=orjson.dumps(_public(entry)),
                    headers=_trace(entry),
                )
                for entry in entries
            )
            cleared.append((doc_id, entries))
        if not records:
            return 0
        await self._publisher.publish(records)
        self._metrics.outbox_published.inc(len(records))
        await self._store.clear_outbox(cleared)
        return len(records)

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


def _trace(entry: Mapping[str, Any]) -> tuple[tuple[str, bytes], ...]:
    """The causing input's trace context, kept in the outbox entry, as a header."""
    traceparent = entry.get("traceparent")
    return (("traceparent", str(traceparent).encode()),) if traceparent else ()


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
