"""Check-log summaries: written to MongoDB in the old job's shape and published to Kafka.

Entries are streamed, never held for every user: they come from a :class:`SortedLogSpill`
(sorted, spilled to disk past a few MiB), the split into parts is planned in one pass over
them and the parts are built and written one at a time in a second, yielding to the event
loop every :data:`_YIELD_EVERY` entries.

Idempotent: a part's ``_id`` derives from the check's cause (a tick's instant, an interval's
start, the command's instant), part ``k`` at that plus ``k - 1``; the store's insert keeps a
part already stored (a retried write) and moves past another check's (a collision). Each
part is published after it is stored; a publish that fails is retried by writing the same
parts again (stored once, published at least once, each copy with the same ``_id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.adapters.kafka import OutRecord, Publisher
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import CheckLogStore
from consumer.domain.checklog import (
    PartPlanner,
    UserLog,
    check_log_header,
    header_budget,
    max_entry_bytes,
)
from consumer.logs import get_logger
from consumer.offline.logspill import EncodedEntry, SortedLogSpill, fitted, merge_adjacent

log = get_logger(__name__)

_YIELD_EVERY = 500  # entries between two returns to the event loop (a few ms)
# The largest header a check can have: a user id of 20 digits, an _id of 9999-12-31.
_LARGEST_HEADER = header_budget(datetime(9999, 12, 31, tzinfo=UTC), 2**63 - 1, False)

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class WrittenCheckLog:
    """The ``_id`` of each part written, in order, and how many users they list."""

    ids: tuple[int, ...]
    users: int


class CheckLogSink:
    def __init__(
        self,
        store: CheckLogStore,
        publisher: Publisher,
        metrics: Metrics,
        topic: str,
        max_bytes: int,
    ) -> None:
        # The same parts go to MongoDB and to Kafka, so they are sized for the smaller
        # limit: a broker's default max.message.bytes (~1 MB), not MongoDB's 16 MB.
        self._max_bytes = max_bytes
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic

    @property
    def max_entry_bytes(self) -> int:
        """The largest entry a part holds; larger ones are cut (``fit_user_log``)."""
        return max_entry_bytes(_LARGEST_HEADER, self._max_bytes)

    async def write(
        self,
        check_time: datetime,
        check_user: int | None,
        edit_mode: bool,
        spill: SortedLogSpill,
        kind: str,
        emit: Emit | None = None,
        traceparent: str = "",
    ) -> WrittenCheckLog:
        """Write the check-log part(s) of one check from ``spill``; ``emit`` gets each part
        once it is stored and published (the online ``check`` prints them). A
        ``traceparent`` (the causing tick's) is published as a header of every part."""
        planner = PartPlanner(header_budget(check_time, check_user, edit_mode), self._max_bytes)
        async for entry in self._entries(spill):
            planner.add(entry.size)
        counts = planner.counts()
        entries = aiter(self._entries(spill))
        headers = (("traceparent", traceparent.encode()),) if traceparent else ()
        ids: list[int] = []
        for number, count in enumerate(counts, start=1):
            if len(counts) == 1:
                header = check_log_header(check_time, check_user, edit_mode)
            else:
                header = check_log_header(check_time, check_user, edit_mode, number, len(counts))
                header["_id"] = max(header["_id"] + number - 1, ids[-1] + 1 if ids else 0)
            part = {
                **header,
                "log": [orjson.loads((await anext(entries)).json) for _ in range(count)],
            }
            part["_id"] = await self._store.insert_check_log(part)
            await self._publisher.publish(
                [OutRecord(self._topic, str(check_user or 0).encode(), orjson.dumps(part), headers)]
            )
            ids.append(part["_id"])
            if emit is not None:
                emit(part)
        users = sum(counts)
        self._metrics.check_logs_written.labels(kind).inc(len(ids))
        log.info(
            "check_log_written",
            kind=kind,
            check_id=ids[0],
            parts=len(ids),
            users=users,
            edit_mode=edit_mode,
        )
        return WrittenCheckLog(tuple(ids), users)

    async def _entries(self, spill: SortedLogSpill) -> AsyncIterator[EncodedEntry]:
        """The spill's entries, one per user (merged), each fitted to a part."""
        for count, entry in enumerate(
            fitted(merge_adjacent(spill.entries()), self.max_entry_bytes)
        ):
            if count % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
            yield entry


DEFAULT_MAX_PENDING_INTERVALS = 60  # an hour of the default 60 s intervals


class IntervalSummary:
    """The transitions made during one interval, spilled (sorted, merged per user when
    written); written as one check-log whose ``_id`` and ``check_time`` are the instant of
    its first entry. An interval that fails to be written or published is kept as it is
    and written again (the same document: stored once) before any later one.

    At most ``max_pending`` closed intervals wait while the check-log write fails: past
    that the oldest are dropped, counted (``pass_status_check_log_intervals_dropped_total``
    by reason) and logged (``check_log_intervals_dropped``), so an outage of the check-log
    sink costs bounded memory and disk. Those still waiting when the service stops are
    counted and logged the same way (:meth:`abandon`); a killed process loses them unseen
    (their transitions are in the documents and on the status topic all the same)."""

    def __init__(
        self,
        max_pending: int = DEFAULT_MAX_PENDING_INTERVALS,
        metrics: Metrics | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._spill = SortedLogSpill()
        self._started: datetime | None = None
        self._pending: list[tuple[datetime, SortedLogSpill]] = []
        self._max_pending = max_pending
        self._metrics = metrics

    def add(self, entry: UserLog | None) -> None:
        if entry is None or not entry.invalid_list:
            return
        if self._started is None:
            self._started = datetime.now(UTC)
        self._spill.add(entry)

    def __len__(self) -> int:
        """Entries not yet written (this interval's and earlier failed ones)."""
        return self._spill.count + sum(spill.count for _, spill in self._pending)

    @property
    def pending_intervals(self) -> int:
        """Closed intervals waiting to be written (the open one not counted)."""
        return len(self._pending)

    async def flush(self, sink: CheckLogSink) -> None:
        """Close this interval and write every interval not written yet, oldest first."""
        if self._started is not None:
            self._pending.append((self._started, self._spill))
            self._spill, self._started = SortedLogSpill(), None
            excess = len(self._pending) - self._max_pending
            if excess > 0:
                self._drop(self._pending[:excess], "overflow")
                del self._pending[:excess]
        self._gauge()
        while self._pending:
            started, spill = self._pending[0]
            await sink.write(started, None, True, spill, kind="interval")
            self._pending.pop(0)
            spill.close()
            self._gauge()

    def abandon(self) -> None:
        """The service stops: count and log the intervals never written (the open one
        included), and free their spills."""
        if self._started is not None:
            self._pending.append((self._started, self._spill))
            self._spill, self._started = SortedLogSpill(), None
        if self._pending:
            self._drop(self._pending, "shutdown")
        self._pending = []
        self._gauge()

    def _drop(self, dropped: list[tuple[datetime, SortedLogSpill]], reason: str) -> None:
        entries = sum(spill.count for _, spill in dropped)
        for _, spill in dropped:
            spill.close()
        if self._metrics is not None:
            self._metrics.check_log_intervals_dropped.labels(reason).inc(len(dropped))
        log.error(
            "check_log_intervals_dropped",
            reason=reason,
            intervals=len(dropped),
            entries=entries,
            first_started=dropped[0][0].isoformat(),
            last_started=dropped[-1][0].isoformat(),
            max_pending=self._max_pending,
        )

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.check_log_intervals_pending.set(len(self._pending))
