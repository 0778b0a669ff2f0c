"""Relay of status-change events from document outboxes to Kafka.

The lifecycle and its invariants are in :mod:`consumer.domain.outbox`; this is its I/O:
each relay takes a ticket (:meth:`OutboxRelay.batch`) whose key its writes stamp on the
documents; it publishes, waits for the broker's acknowledgements, and closes the ticket:
the source's watermark (:mod:`consumer.service.relay_ledger`), saved every few seconds,
then says published, and no document is written again for it. A crash or a fault in
between leaves the entries under an unpublished key: the orphan relay publishes them
again with the same ``event_id`` and clears them by exact value.

Order (invariant I4): within this process one relay at a time handles a document (a
ticket-used batch, a tick's sweep and the orphan relay share this object), each
publishes the outbox as its writer saw it, head first, and skips entries that a relay
of the same document acknowledged while it waited. So a sweep that appended
``USING -> EXPIRED`` behind a batch's pending ``USABLE -> USING`` never publishes
before that batch's relay is done.

Refusals (invariant I6): if Kafka refuses a record for what it holds
(``RecordRejectedError``: too large, invalid), the relay publishes the entries again one
at a time, head first, to find those refused; it moves each refused entry to the
document's ``pass_status_outbox_rejected`` (counted, logged with user, pass and
``event_id``) and the others are published as usual. Such a refusal never fails the relay: the
user's later entries flow, and the input that caused the event is not dead-lettered (it
was applied). A refusal of the topic itself (``PublishRejectedError``: not authorized)
is raised and leaves every entry queued: once an operator fixes it, they drain alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from consumer.adapters.kafka import OutRecord, Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import OutboxStore
from consumer.domain.outbox import pending_outbox
from consumer.domain.watermarks import parse_relay_key
from consumer.errors import RecordRejectedError, StoreUnavailableError, TransientError
from consumer.logs import get_logger
from consumer.policy import Action, Path, decide
from consumer.service.doclocks import DocumentLocks
from consumer.service.relay_ledger import RelayLedger, RelayTicket

log = get_logger(__name__)

# A source that has not saved its watermark for this long crashed (a live one saves every
# second, and writes nothing once it could not save for UNSAVED_WATERMARK_LIMIT); once none
# of its entries waits, the orphan relay stops asking for its entries.
RETIRE_SILENT_SOURCES_AFTER = timedelta(minutes=15)
UNSAVED_WATERMARK_LIMIT = timedelta(minutes=5)

Pending = Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]


@dataclass(slots=True)
class _Relayed:
    """What relays of one document settled (acknowledged, or moved aside as refused)
    while others waited for it."""

    acknowledged: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)

    def settled(self, event_id: str) -> bool:
        return event_id in self.acknowledged or event_id in self.rejected


@dataclass(frozen=True, slots=True)
class _Entry:
    doc_id: Any
    state: _Relayed
    value: Mapping[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.value["event_id"])


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        metrics: Metrics,
        topic: str,
        ledger: RelayLedger,
        host: str = "",
        save_every: float = 1.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic
        self._locks: DocumentLocks[_Relayed] = DocumentLocks(_Relayed)
        self.ledger = ledger
        self._host = host
        self._registered = False
        self._saved_at = 0.0  # the ledger's clock at the last save (or registration)
        self._save_every = save_every  # seconds between saves made by the relays themselves
        self._registering = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[RelayTicket]:
        """A relay's ticket, for its writes to stamp; closed as published if the block
        ends without an exception (its relay acknowledged), else as failed."""
        ticket = await self.open_ticket()
        published = False
        try:
            yield ticket
            published = True
        finally:
            self.ledger.close(ticket, published=published)

    async def open_ticket(self) -> RelayTicket:
        """A relay's ticket, registering this source first if needed; the caller closes it
        (``ledger.close``) once its relay is over.

        It saves the watermark first when the last save is older than the save interval:
        a one-shot command (``check --all``) runs no periodic job, yet its sweep may last
        minutes. Refused (a transient fault: the caller backs off) while this source has
        not saved its watermark for :data:`UNSAVED_WATERMARK_LIMIT`: other replicas take a
        source that long silent for a crashed one and stop looking for its entries, so it
        must not write new ones until a save says it is alive."""
        await self._register()
        if self.ledger.clock() - self._saved_at >= self._save_every:
            with contextlib.suppress(TransientError):  # judged just below, by its age
                await self._save(datetime.now(UTC), final=False)
        unsaved = self.ledger.clock() - self._saved_at
        if unsaved > UNSAVED_WATERMARK_LIMIT.total_seconds():
            raise StoreUnavailableError(
                f"relay source {self.ledger.source}: watermark not saved for {unsaved:.0f} s;"
                " no outbox write until it is"
            )
        return self.ledger.open()

    async def _register(self) -> None:
        """Register this source before its first stamped write (I2), and learn every
        source's watermark once."""
        if self._registered:
            return
        async with self._registering:
            if not self._registered:
                now = datetime.now(UTC)
                token = secrets.token_hex(8)
                self.ledger.start(await self._store.register_relay_source(token, self._host, now))
                self.ledger.learn(await self._store.relay_watermarks(include_done=True))
                self._saved_at = self.ledger.clock()
                self._registered = True
                log.info("relay_source_registered", source=self.ledger.source, host=self._host)

    async def keep_watermark(self, now: datetime, *, final: bool = False) -> None:
        """Save this source's watermark (and heartbeat; ``done`` when ``final`` with every
        relay published), then learn the other sources' current ones."""
        if not self._registered:
            return
        await self._save(now, final=final)
        if not final:
            self.ledger.learn(await self._store.relay_watermarks(include_done=False))

    async def _save(self, now: datetime, *, final: bool) -> None:
        saving = self.ledger.clock()
        await self._store.save_relay_watermark(
            self.ledger.source, self.ledger.watermark(), now, done=final and self.ledger.idle
        )
        self._saved_at = saving

    async def relay(self, pending: Pending, *, clear: bool = False) -> int:
        """Publish each document's pending entries (and, with ``clear``, remove them from
        their outboxes: the orphan relay). Returns events published.

        Entries Kafka refuses for what they hold are moved aside (I6), never raised; a
        transient fault or a refusal of the topic raises and leaves every entry in its
        outbox, unpublished.
        """
        docs = [(doc_id, entries) for doc_id, entries in pending if entries]
        if not docs:
            return 0
        async with self._holding(docs) as relayed:
            todo = [
                _Entry(doc_id, relayed[_key(doc_id)], entry)
                for doc_id, entries in docs
                for entry in entries
                if not relayed[_key(doc_id)].settled(str(entry["event_id"]))
            ]
            try:
                await self._publisher.publish([self._record(e.value) for e in todo])
            except RecordRejectedError:  # some record of the batch: find which, one at a time
                refused = await self._one_at_a_time(todo)
            else:
                refused = []
                for entry in todo:
                    entry.state.acknowledged.add(entry.event_id)
            self._metrics.outbox_published.inc(len(todo) - len(refused))
            if refused:
                await self._reject(refused)
            if clear:
                cleared = []
                for doc_id, entries in docs:
                    moved = relayed[_key(doc_id)].rejected
                    kept = [e for e in entries if str(e["event_id"]) not in moved]
                    cleared.append((doc_id, kept))
                await self._store.clear_outbox(cleared)
        return len(todo) - len(refused)

    async def _one_at_a_time(self, todo: Sequence[_Entry]) -> list[tuple[_Entry, str]]:
        """Publish ``todo`` one entry at a time, head first; return the entries refused,
        each with Kafka's error.

        Entries the failed batch publish got through are published again (same
        ``event_id``); a refused one does not stop the entries behind it.
        """
        refused: list[tuple[_Entry, str]] = []
        for entry in todo:
            try:
                await self._publisher.publish([self._record(entry.value)])
            except Exception as exc:
                if decide(exc, Path.OUTBOX_ENTRY).action is not Action.SET_ASIDE:
                    raise
                entry.state.rejected.add(entry.event_id)
                refused.append((entry, str(exc)[:300]))
            else:
                entry.state.acknowledged.add(entry.event_id)
        return refused

    async def _reject(self, refused: Sequence[tuple[_Entry, str]]) -> None:
        """Move refused entries to their documents' rejected lists (I6)."""
        by_doc: dict[Hashable, tuple[Any, list[Mapping[str, Any]]]] = {}
        for entry, _error in refused:
            by_doc.setdefault(_key(entry.doc_id), (entry.doc_id, []))[1].append(entry.value)
        await self._store.reject_outbox_entries(list(by_doc.values()))
        self._metrics.outbox_rejected.inc(len(refused))
        for entry, error in refused:
            log.error(
                "outbox_event_rejected",
                user_id=entry.value.get("user_id"),
                pass_uuid=entry.value.get("pass_uuid"),
                event_id=entry.event_id,
                status_log=entry.value.get("status_log"),
                topic=self._topic,
                error=error,
                moved_to="pass_status_outbox_rejected",
            )

    @contextlib.asynccontextmanager
    async def _holding(self, docs: Pending) -> AsyncIterator[dict[Hashable, _Relayed]]:
        async with self._locks.holding([_key(doc_id) for doc_id, _ in docs]) as states:
            yield states

    def _record(self, entry: Mapping[str, Any]) -> OutRecord:
        return OutRecord(
            topic=self._topic,
            key=str(entry["user_id"]).encode(),
            value=orjson.dumps(_public(entry)),
            headers=_trace(entry),
        )

    async def relay_orphans(
        self,
        now: datetime,
        older_than: timedelta,
        limit: int = 500,
        in_flight: timedelta = timedelta(0),
    ) -> int:
        """Publish outbox entries left behind (by a crash) for longer than ``older_than``.

        Returns the number of events still waiting in outboxes when the scan was made (the
        backlog gauge's value), counted in the same read that finds the orphans: those
        written more than ``in_flight`` ago (younger ones are in their relay, or published
        by another replica that has not saved its watermark yet).
        """
        started = time.perf_counter()
        others = await self._store.relay_watermarks(include_done=False)
        self.ledger.learn(others)
        marks = dict(others)
        if self.ledger.started:  # this source's own state, exact; none before its first write
            marks[self.ledger.source] = self.ledger.watermark()
        scan = await self._store.scan_outboxes(now - older_than, limit, marks, now - in_flight)
        docs = scan.orphans
        published = await self.relay([(d["_id"], pending_outbox(d)) for d in docs], clear=True)
        # Documents whose outbox was already empty only need their marker cleared.
        await self._store.clear_outbox([(d["_id"], []) for d in docs if not pending_outbox(d)])
        self.ledger.retire_failed(scan.unpublished_keys)
        holding = {parsed[0] for k in scan.unpublished_keys if (parsed := parse_relay_key(k))}
        retired = await self._store.retire_relay_sources(
            now - RETIRE_SILENT_SOURCES_AFTER, holding | {self.ledger.source}
        )
        if retired:
            log.info("relay_sources_retired", sources=retired)
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
