"""In-memory fakes of the store and publisher ports, for fast service-layer tests.

:class:`FakeCacheStore` keeps documents in a :class:`FakeCollection` that applies
MongoDB's filter and update semantics (``tests/unit/mongo_semantics.py``), and builds its
conditional writes with the same pure functions as ``MongoCacheStore``
(:func:`consumer.domain.user_update.write_change`,
:func:`consumer.domain.outbox.clearing_steps`): a test on the fake exercises the real
conditions, not a copy of them.

Both fakes let a test interleave steps on purpose: :meth:`FakeCacheStore.before` runs a
coroutine before the next call of an operation (say, an owner's ``clear_outbox`` between
a sweep's read and its write), and :meth:`FakeCacheStore.hold` /
:meth:`FakePublisher.hold` stop the next call at a :class:`Gate` until the test releases
it. ``fail_next`` makes the next calls raise.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import TopicPartition
from consumer.adapters.kafka import OutRecord
from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo_outbox import ScanFold, unpublished_query
from consumer.adapters.mongo_sweeps import SweepChunk, SweepProgress, due_query
from consumer.adapters.store_ports import OutboxScan
from consumer.bootstrap import build_parts, build_runner
from consumer.domain.outbox import (
    OUTBOX,
    OUTBOX_RELAY,
    OUTBOX_SINCE,
    ConditionalChange,
    Relaying,
    clearing_steps,
    rejecting_steps,
)
from consumer.domain.rules import read_int
from consumer.domain.user_update import (
    CHECKED_AT,
    NEVER_DUE,
    NEXT_CHECK_AT,
    UserUpdate,
    write_change,
)
from consumer.domain.watermarks import Watermark, key_published, parse_relay_key, relay_key
from consumer.errors import PublishRejectedError, RecordRejectedError
from consumer.service.health import Health
from consumer.service.runner import Runner
from consumer.settings import Settings
from prometheus_client import CollectorRegistry

from tests.unit.mongo_semantics import Document, apply_update, matches, stored

# A relay key for tests that plan and write outside the service's writer.
STAMP = Relaying(relay_key(999, 1), earlier_published=False)


class Gate:
    """Stops a caller until released; ``reached`` is set when the caller arrives."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._open.wait()

    def release(self) -> None:
        self._open.set()


class _Interleavings:
    """Per-operation hooks, gates and injected failures, each used once."""

    def __init__(self) -> None:
        self._before: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        self._gates: dict[str, list[Gate]] = {}
        self._failures: dict[str, list[BaseException]] = {}
        self.calls: dict[str, int] = {}

    def before(self, op: str, hook: Callable[[], Awaitable[None]]) -> None:
        self._before.setdefault(op, []).append(hook)

    def hold(self, op: str) -> Gate:
        gate = Gate()
        self._gates.setdefault(op, []).append(gate)
        return gate

    def fail_next(self, op: str, error: BaseException, times: int = 1) -> None:
        self._failures.setdefault(op, []).extend([error] * times)

    async def enter(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self._failures.get(op):
            raise self._failures[op].pop(0)
        if self._before.get(op):
            await self._before[op].pop(0)()
        if self._gates.get(op):
            await self._gates[op].pop(0).pass_through()


class FakeCollection:
    """Documents in insertion order, read and written with MongoDB's semantics."""

    def __init__(self) -> None:
        self.docs: list[Document] = []

    def insert(self, *docs: Mapping[str, Any]) -> None:
        for doc in docs:
            if any(d["_id"] == doc["_id"] for d in self.docs):
                raise KeyError(f"duplicate _id {doc['_id']!r}")
            self.docs.append(stored(doc))

    def find(self, query: Mapping[str, Any]) -> list[Document]:
        return [stored(d) for d in self.docs if matches(d, query)]

    def get(self, doc_id: Any) -> Document:
        return next(stored(d) for d in self.docs if d["_id"] == doc_id)

    def update_one(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        for doc in self.docs:
            if matches(doc, query):
                apply_update(doc, update)
                return True
        return False

    def apply(self, change: ConditionalChange) -> bool:
        return self.update_one({"_id": change.doc_id, **change.condition}, change.change)


class FakeCacheStore(_Interleavings):
    """:class:`consumer.adapters.mongo.CacheStore` over a :class:`FakeCollection`."""

    def __init__(self, *docs: Mapping[str, Any]) -> None:
        super().__init__()
        self.cache = FakeCollection()
        self.cache.insert(*docs)
        self.check_logs: list[Document] = []
        self._write_errors: dict[int, BaseException] = {}
        self._after_write_errors: dict[int, list[BaseException]] = {}
        self.sweep_chunks: dict[str, list[SweepChunk]] = {}
        self.finished_sweeps: set[str] = set()
        # Relay sources as saved: their watermark, and whether done.
        self.relay_sources: dict[int, tuple[Watermark, bool]] = {}
        self.heartbeats: dict[int, datetime] = {}
        self._writes_by_user: dict[int, int] = {}
        self.bulk_sizes: list[int] = []  # writes per write_users call
        self.single_writes: list[int] = []  # the users of write_user calls, in order

    def fail_writes_of(self, user_id: int, error: BaseException) -> None:
        """Every write of ``user_id`` raises ``error`` (a document too large, say)."""
        self._write_errors[user_id] = error

    def fail_after_write_of(self, user_id: int, error: BaseException) -> None:
        """The next write of ``user_id`` is applied, then raises ``error``: the process
        stops (or the reply is lost) right after the store made the change."""
        self._after_write_errors.setdefault(user_id, []).append(error)

    def write_calls_of(self, user_id: int) -> int:
        return self._writes_by_user.get(user_id, 0)

    async def find_user(self, user_id: int) -> Document | None:
        await self.enter("find_user")
        found = self.cache.find({"user_id": user_id})
        return found[0] if found else None

    async def find_users(self, user_ids: Sequence[int]) -> AsyncIterator[dict[int, Document]]:
        """One round holding every user found (the real store splits rounds by bytes)."""
        await self.enter("find_users")
        found: dict[int, Document] = {}
        for doc in self.cache.find({"user_id": {"$in": list(user_ids)}}):
            user_id = read_int(doc.get("user_id"))
            if user_id is not None and user_id not in found:
                found[user_id] = doc
        if found:
            yield found

    async def write_user(self, read: Mapping[str, Any], update: UserUpdate, now: datetime) -> bool:
        await self.enter("write_user")
        self.single_writes.append(update.user_id)
        self._writes_by_user[update.user_id] = self._writes_by_user.get(update.user_id, 0) + 1
        if update.user_id in self._write_errors:
            raise self._write_errors[update.user_id]
        written = self.cache.apply(write_change(read, update, now))
        if written and self._after_write_errors.get(update.user_id):
            raise self._after_write_errors[update.user_id].pop(0)
        return written

    async def write_users(
        self, writes: Sequence[tuple[Mapping[str, Any], UserUpdate]], now: datetime
    ) -> list[bool | Exception]:
        """MongoDB's unordered bulk: every write is tried, in order; one refused
        (``fail_writes_of``) fails alone and the others are applied. Hooks, gates and
        injected failures of ``write_user`` apply to each write, a failure to the whole
        bulk (as a lost connection would); ``fail_after_write_of`` raises once all are
        applied (the reply is lost)."""
        await self.enter("write_users")
        self.bulk_sizes.append(len(writes))
        outcomes: list[bool | Exception] = []
        lost_reply: BaseException | None = None
        for read, update in writes:
            await self.enter("write_user")
            self._writes_by_user[update.user_id] = self._writes_by_user.get(update.user_id, 0) + 1
            if update.user_id in self._write_errors:
                error = self._write_errors[update.user_id]
                if not isinstance(error, Exception):
                    raise error
                outcomes.append(error)
                continue
            written = self.cache.apply(write_change(read, update, now))
            if written and self._after_write_errors.get(update.user_id):
                lost_reply = self._after_write_errors[update.user_id].pop(0)
            outcomes.append(written)
        if lost_reply is not None:
            raise lost_reply
        return outcomes

    async def clear_outbox(self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> None:
        await self.enter("clear_outbox")
        if not docs:
            return
        emptied, pulled, unmarked = clearing_steps(docs)
        matched = [self.cache.apply(c) for c in emptied]  # each one, as a bulk write does
        if all(matched):
            return
        for change in (*pulled, *unmarked):
            self.cache.apply(change)

    async def reject_outbox_entries(
        self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]
    ) -> None:
        await self.enter("reject_outbox_entries")
        moved, unmarked = rejecting_steps(docs)
        for change in (*moved, *unmarked):
            self.cache.apply(change)

    async def due_users(
        self, tick_at: datetime, shard: int, shards: int
    ) -> AsyncIterator[Document]:
        await self.enter("due_users")
        for doc in self.cache.find(due_query(tick_at, shard, shards)):
            yield doc

    async def due_user(self, tick_at: datetime, user_id: int) -> AsyncIterator[Document]:
        await self.enter("due_users")
        for doc in self.cache.find({"$and": [due_query(tick_at, 0, 1), {"user_id": user_id}]}):
            yield doc

    async def all_users(self, user_id: int | None) -> AsyncIterator[Document]:
        await self.enter("all_users")
        query: dict[str, Any] = {} if user_id is None else {"user_id": user_id}
        for doc in sorted(self.cache.find(query), key=lambda d: d.get("user_id", 0)):
            yield doc

    async def users_after(
        self, after: int | None, shard: int, shards: int
    ) -> AsyncIterator[Document]:
        await self.enter("all_users")
        numeric = [d for d in self.cache.find({}) if _is_number(d.get("user_id"))]
        in_shard = [d for d in numeric if shards <= 1 or d["user_id"] % shards == shard]
        later = [d for d in in_shard if after is None or d["user_id"] > after]
        for doc in sorted(later, key=lambda d: d["user_id"]):
            yield doc

    async def unreadable_users(self, shard: int) -> AsyncIterator[Document]:
        await self.enter("all_users")
        if shard == 0:
            for doc in self.cache.find({}):
                if not _is_number(doc.get("user_id")):
                    yield doc

    async def mark_unreadable(self, read: Mapping[str, Any], now: datetime) -> bool:
        await self.enter("mark_unreadable")
        user_id = read.get("user_id", _ABSENT)
        condition = {"user_id": {"$exists": False} if user_id is _ABSENT else user_id}
        change = {"$set": {CHECKED_AT: now, NEXT_CHECK_AT: NEVER_DUE}}
        return self.cache.update_one({"_id": read["_id"], **condition}, change)

    async def load_sweep(self, sweep_id: str) -> SweepProgress | None:
        await self.enter("load_sweep")
        if sweep_id in self.finished_sweeps:
            return SweepProgress(True, 0, None)
        chunks = self.sweep_chunks.setdefault(sweep_id, [])
        ends = [c for c in chunks if c.batch_end]
        last = ends[-1] if ends else None
        # Chunks after the last finished batch belong to a batch that is done again.
        chunks[:] = [c for c in chunks if last is not None and c.seq <= last.seq]
        if last is None:
            return None
        return SweepProgress(False, last.seq, last.last_user_id, last.read_all)

    async def save_sweep_chunk(self, chunk: SweepChunk) -> None:
        await self.enter("save_sweep_chunk")
        chunks = self.sweep_chunks.setdefault(chunk.sweep_id, [])
        chunks[:] = sorted([c for c in chunks if c.seq != chunk.seq] + [chunk], key=lambda c: c.seq)

    async def sweep_entries(self, sweep_id: str) -> AsyncIterator[list[Document]]:
        await self.enter("sweep_entries")
        for chunk in self.sweep_chunks.get(sweep_id, []):
            yield list(chunk.entries)

    async def finish_sweep(self, sweep_id: str) -> None:
        await self.enter("finish_sweep")
        self.finished_sweeps.add(sweep_id)
        self.sweep_chunks.pop(sweep_id, None)

    async def scan_outboxes(
        self,
        older_than: datetime,
        limit: int,
        watermarks: Mapping[int, Watermark],
        counted_before: datetime | None = None,
    ) -> OutboxScan:
        await self.enter("scan_outboxes")
        found = self.cache.find(unpublished_query(watermarks))
        projected = [
            {k: d[k] for k in ("_id", "user_id", OUTBOX, OUTBOX_SINCE, OUTBOX_RELAY) if k in d}
            for d in found
        ]
        fold = ScanFold(older_than, limit, counted_before)
        for doc in projected:
            fold.add(doc)
        return fold.result()

    async def register_relay_source(self, token: str, host: str, now: datetime) -> int:  # noqa: ARG002 - the port's signature
        await self.enter("register_relay_source")
        source = len(self.relay_sources) + 1
        self.relay_sources[source] = (Watermark(), False)
        self.heartbeats[source] = now
        return source

    async def save_relay_watermark(
        self,
        source: int,
        mark: Watermark,
        now: datetime,
        *,
        done: bool,
    ) -> None:
        await self.enter("save_relay_watermark")
        self.relay_sources[source] = (mark, done)
        self.heartbeats[source] = now

    async def retire_relay_sources(self, silent_since: datetime, keep: Collection[int]) -> int:
        await self.enter("retire_relay_sources")
        retired = [
            s
            for s, (_mark, done) in self.relay_sources.items()
            if not done and s not in keep and self.heartbeats[s] < silent_since
        ]
        for source in retired:
            self.relay_sources[source] = (self.relay_sources[source][0], True)
        return len(retired)

    async def relay_watermarks(self, *, include_done: bool) -> dict[int, Watermark]:
        await self.enter("relay_watermarks")
        return {s: m for s, (m, done) in self.relay_sources.items() if include_done or not done}

    async def ping(self) -> None:
        await self.enter("ping")

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int:
        await self.enter("insert_check_log")
        body = stored(doc)
        while any(d["_id"] == body["_id"] for d in self.check_logs):
            body["_id"] += 1
        self.check_logs.append(body)
        return int(body["_id"])

    # -- what tests look at ----------------------------------------------------------

    def doc(self, doc_id: Any) -> Document:
        return self.cache.get(doc_id)

    def lost_outboxes(self) -> list[Any]:
        """Documents holding outbox entries that the orphan scan would never find: no
        legacy marker, and no relay key of a registered source."""
        return [
            d["_id"]
            for d in self.cache.docs
            if d.get(OUTBOX)
            and not isinstance(d.get(OUTBOX_SINCE), datetime)
            and (parse_relay_key(d.get(OUTBOX_RELAY)) or (0,))[0] not in self.relay_sources
        ]

    def unpublished(self) -> dict[Any, list[Any]]:
        """Each document's outbox entries (event ids) not published according to the
        saved watermarks: what a scan would count."""
        marks = {s: m for s, (m, _done) in self.relay_sources.items()}
        return {
            d["_id"]: [e.get("event_id") for e in d[OUTBOX]]
            for d in self.cache.docs
            if d.get(OUTBOX) and not key_published(d.get(OUTBOX_RELAY), marks)
        }


class FakePublisher(_Interleavings):
    """:class:`consumer.adapters.kafka.Publisher` keeping every acknowledged record.

    :meth:`refuse` makes it refuse some records for good, as Kafka does a record too
    large (``RecordRejectedError``, the default) or a topic not authorized (a plain
    ``PublishRejectedError``): the others of the same call are acknowledged (the producer
    sends them all), then the call raises.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[OutRecord] = []
        self.refused: list[OutRecord] = []
        self._refuse: Callable[[OutRecord], bool] = lambda _record: False
        self._refusal: type[PublishRejectedError] = RecordRejectedError

    def refuse(
        self,
        predicate: Callable[[OutRecord], bool],
        error: type[PublishRejectedError] = RecordRejectedError,
    ) -> None:
        self._refuse = predicate
        self._refusal = error

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if not records:
            return
        await self.enter("publish")
        refused = [r for r in records if self._refuse(r)]
        self.records.extend(r for r in records if not self._refuse(r))
        if refused:
            self.refused.extend(refused)
            message = f"Kafka refused {len(refused)} record(s)"
            raise self._refusal(message, topic=refused[0].topic)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]


class FakeService:
    """The real service layer (writer, relay, sweeper, ticket-used handler) over fakes."""

    STATUS_TOPIC = "status"
    DEAD_LETTER_TOPIC = "dead"
    CHECK_LOG_TOPIC = "check-log"

    SETTINGS = Settings(
        topic_status_changed=STATUS_TOPIC,
        topic_dead_letter=DEAD_LETTER_TOPIC,
        topic_check_log=CHECK_LOG_TOPIC,
        group_id="g",
        max_message_bytes=65536,
        user_concurrency=4,
        conflict_retries=3,
        check_log_max_bytes=900_000,
    )

    def __init__(
        self,
        store: FakeCacheStore,
        publisher: FakePublisher | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher or FakePublisher()
        self.metrics = Metrics(CollectorRegistry())
        self.settings = settings or self.SETTINGS
        # The same wiring as the service's (consumer.bootstrap), over the fakes.
        self.parts = build_parts(self.settings, store, self.publisher, self.metrics)
        self.relay = self.parts.relay
        self.writer = self.parts.writer
        self.summary = self.parts.summary
        self.sink = self.parts.sink
        self.sweeper = self.parts.sweeper
        self.ticket_used = self.parts.ticket_used

    def status_events(self) -> list[dict[str, Any]]:
        return self.publisher.values(self.STATUS_TOPIC)

    async def unpublished(self) -> dict[Any, list[Any]]:
        """Save this replica's watermark (its periodic job), then what the store says is
        not published (:meth:`FakeCacheStore.unpublished`)."""
        await self.relay.keep_watermark(datetime.now(UTC))
        return self.store.unpublished()

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.publisher.values(self.DEAD_LETTER_TOPIC)


@dataclass(frozen=True, slots=True)
class FakeMessage:
    """What aiokafka's ``getmany`` returns for one record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None


RUNNER_SETTINGS = Settings(
    topic_ticket_used="used",
    topic_tick="tick",
    topic_dead_letter=FakeService.DEAD_LETTER_TOPIC,
    topic_status_changed=FakeService.STATUS_TOPIC,
)
"""Settings of a runner over the fakes: ticket-used on "used", ticks on "tick"."""


def a_user_doc(user_id: int, now: datetime, *, expired: bool = False) -> Document:
    """User ``user_id`` (``_id`` ``d<user_id>``) holding one pass ``p<user_id>``: USABLE
    expiring a day after ``now``, or USING expired a day before it."""
    expiration = (now + timedelta(days=-1 if expired else 1)).isoformat()
    status = "USING" if expired else "USABLE"
    return {
        "_id": f"d{user_id}",
        "user_id": user_id,
        "passes": [
            {"pass_uuid": f"p{user_id}", "status": status, "payload": {"expiration": expiration}}
        ],
    }


def ticket_used_message(user_id: int, offset: int, used_at: datetime) -> FakeMessage:
    """A ticket-used record on partition ("used", 0) for the user's pass ``p<user_id>``."""
    body = {
        "event_id": f"e{offset}",
        "user_id": user_id,
        "pass_uuid": f"p{user_id}",
        "used_at": used_at.isoformat(),
    }
    return FakeMessage("used", 0, offset, str(user_id).encode(), orjson.dumps(body))


class FakeConsumer:
    """The part of ``AIOKafkaConsumer`` the runner drives, recording what it was told."""

    def __init__(self, *partitions: tuple[str, int]) -> None:
        self.partitions = {TopicPartition(t, p) for t, p in partitions}
        self.commits: list[dict[Any, int]] = []
        self.seeks: list[tuple[Any, int]] = []
        self.paused: set[Any] = set()
        self.log: dict[Any, list[FakeMessage]] = {tp: [] for tp in self.partitions}
        self.positions: dict[Any, int] = dict.fromkeys(self.partitions, 0)

    def append(self, *messages: FakeMessage) -> None:
        """Records arrive on their partitions (offsets as given, in order)."""
        for message in messages:
            self.log[TopicPartition(message.topic, message.partition)].append(message)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        """The records after each unpaused partition's position, as aiokafka returns them;
        an empty batch after a short wait when there are none."""
        batch: dict[Any, list[Any]] = {}
        for tp in sorted(self.partitions - self.paused):
            after = [m for m in self.log[tp] if m.offset >= self.positions[tp]][:max_records]
            if after:
                batch[tp] = after
                self.positions[tp] = after[-1].offset + 1
        if not batch:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
        return batch

    def committed_offset(self, tp: Any) -> int | None:
        offsets = [c[tp] for c in self.commits if tp in c]
        return max(offsets) if offsets else None

    def assignment(self) -> set[Any]:
        return set(self.partitions)

    def pause(self, *partitions: Any) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: Any) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))


def a_runner(service: FakeService, consumer: FakeConsumer, settings: Settings) -> Runner:
    """The real runner over fakes, wired by consumer.bootstrap as the service is; its plan
    knows the consumer's partitions."""
    merged = dataclasses.replace(
        settings,
        topic_status_changed=service.settings.topic_status_changed,
        topic_check_log=service.settings.topic_check_log,
        group_id=service.settings.group_id,
        max_message_bytes=service.settings.max_message_bytes,
        user_concurrency=service.settings.user_concurrency,
        conflict_retries=service.settings.conflict_retries,
        check_log_max_bytes=service.settings.check_log_max_bytes,
    )
    # The service's own handlers (one relay, one summary), with the runner's settings.
    parts = dataclasses.replace(service.parts, settings=merged)

    async def probes() -> tuple[bool, bool]:
        return True, True

    return build_runner(parts, consumer, Health(), probes)


_ABSENT = object()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
