"""Tick sweeps: ``due`` (only the users whose next change is due) and ``full`` (the old job).

Memory does not grow with the number of users: documents are streamed in groups of the
sweep's concurrency, each group planned together and written in one bulk
(``UserWriter.update_round``), and check-log entries go to a sorted spill (due dry-runs,
one-user checks) or, for a full sweep of all users, to checkpoints in MongoDB.

A full sweep of all users resumes (see ``adapters/mongo_sweeps``): it reads users in
``user_id`` order and, every ``checkpoint_users`` users, saves the entries of the users
done so far with the last of them. Whoever runs the same tick again (after a transient
error, a crash or a rebalance: the tick's offset is not committed) starts after that user.
Its writes record their transitions in the documents (``consumer.domain.sweep_log``): a
user written after the last checkpoint, read again with nothing left to change, is still
listed with the transitions this sweep made.
A user the failure policy (:mod:`consumer.policy`) says to skip (MongoDB refuses its
document for good, it kept changing under our writes, an unforeseen error) is reported in
the check-log's ``skipped_list`` and counted (``pass_status_sweep_users_skipped_total``);
the sweep goes on. A document whose ``user_id`` cannot be
read is reported under ``user_id`` 0 with its ``_id`` and marked evaluated (apply).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo_sweeps import SweepChunk
from consumer.adapters.store_ports import SweepStore
from consumer.domain.checklog import UserLog
from consumer.domain.events import Cause
from consumer.domain.rules import read_int
from consumer.domain.sweep_log import sweep_entry
from consumer.errors import DocumentError, StoreUnavailableError
from consumer.logs import get_logger
from consumer.offline.logspill import EncodedEntry, SortedLogSpill, encode
from consumer.policy import Action, Path, Verdict, decide
from consumer.service.checklog import CheckLogSink, Emit, IntervalSummary
from consumer.service.outbox import OutboxRelay
from consumer.service.pool import for_each_bounded, in_groups
from consumer.service.relay_ledger import RelayTicket
from consumer.service.sweep_progress import SweepProgressTracker
from consumer.service.writer import RoundOutcome, UserToWrite, UserWriter, WriteOptions

log = get_logger(__name__)

_RELAY_CHUNK = 200  # documents whose outboxes are published together
_CHUNK_BYTES = 8 * 1024 * 1024  # entries per checkpoint document, well under 16 MB


@dataclass(frozen=True, slots=True)
class SweepResult:
    documents_read: int
    documents_changed: int
    transitions: int
    check_log_ids: tuple[int, ...]


class Sweeper:
    def __init__(
        self,
        store: SweepStore,
        writer: UserWriter,
        relay: OutboxRelay,
        sink: CheckLogSink,
        summary: IntervalSummary,
        metrics: Metrics,
        concurrency: int,
        checkpoint_users: int = 500,
    ) -> None:
        self.store = store
        self.writer = writer
        self.relay = relay
        self.sink = sink
        self.summary = summary
        self.metrics = metrics
        self.concurrency = concurrency
        self.checkpoint_users = checkpoint_users

    async def due(
        self,
        tick_at: datetime,
        shard: int,
        shards: int,
        apply: bool,
        cause: Cause,
        user_id: int | None = None,
    ) -> SweepResult:
        """Evaluate, as of ``tick_at``, the users due by then (only ``user_id`` if given)."""
        docs = (
            self.store.due_users(tick_at, shard, shards)
            if user_id is None
            else self.store.due_user(tick_at, user_id)
        )
        with SortedLogSpill() as spill:
            run = _SweepRun(self, tick_at, apply, cause, "due", None if apply else spill)
            await run.over(docs)
            ids: tuple[int, ...] = ()
            if not apply:
                ids = (await self.sink.write(tick_at, user_id, False, spill, kind="due")).ids
        return run.finish(ids)

    async def full(
        self,
        user_id: int | None,
        apply: bool,
        check_time: datetime,
        cause: Cause,
        shard: int = 0,
        shards: int = 1,
        emit: Emit | None = None,
    ) -> SweepResult:
        """The old job: one user or all (of one shard), dry-run or apply; always writes
        one check-log; resumes a sweep of all users that the same cause started."""
        if user_id is not None:
            with SortedLogSpill() as spill:
                run = _SweepRun(self, check_time, apply, cause, "full", spill)
                await run.over(self.store.all_users(user_id))
                written = await self.sink.write(
                    check_time, user_id, apply, spill, "full", emit, cause.traceparent
                )
            return run.finish(written.ids)
        sweep_id = f"full:{cause.event_id}:{shard}/{shards}"
        progress = await self.store.load_sweep(sweep_id)
        run = _SweepRun(self, check_time, apply, cause, "full", None, sweep_id)
        if progress is not None and progress.done:
            log.info("sweep_already_done", sweep_id=sweep_id, cause_event_id=cause.event_id)
            return run.finish(())
        tracker = SweepProgressTracker(progress, self.checkpoint_users)
        if progress is not None:
            log.info("sweep_resumed", sweep_id=sweep_id, after_user_id=progress.last_user_id)
        run.tracker = tracker
        if not tracker.read_all:
            await run.over(self.store.users_after(tracker.after, shard, shards))
            await run.over(self.store.unreadable_users(shard))
            await run.checkpoint(final=True)
        with SortedLogSpill() as spill:
            async for entries in self.store.sweep_entries(sweep_id):
                for e in entries:
                    spill.add_encoded(EncodedEntry(e["u"], e["b"], bytes(e["j"]), e["s"]))
            written = await self.sink.write(
                check_time, None, apply, spill, "full", emit, cause.traceparent
            )
        await self.store.finish_sweep(sweep_id)
        return run.finish(written.ids)


class _SweepRun:
    """The state of one sweep: counters, where entries go, outboxes to relay."""

    def __init__(
        self,
        sweeper: Sweeper,
        now: datetime,
        apply: bool,
        cause: Cause,
        mode: str,
        spill: SortedLogSpill | None,
        sweep_id: str | None = None,
    ) -> None:
        self._s = sweeper
        # A resumable full sweep's id: it checkpoints, and its writes record their
        # transitions in the documents (consumer.domain.sweep_log).
        self._sweep_id = sweep_id
        self._now = now
        self._apply = apply
        self._options = WriteOptions(sweeper.concurrency, apply=apply, sweep_id=sweep_id)
        self._cause = cause
        self._mode = mode
        self._spill = spill
        self.tracker: SweepProgressTracker | None = None
        self._pending: list[tuple[Any, tuple[dict[str, Any], ...]]] = []
        # Relay tickets of groups written and not yet published; those whose entries are
        # all queued in ``_pending`` (consumer.service.relay_ledger).
        self._open_tickets: list[RelayTicket] = []
        self._queued_tickets: list[RelayTicket] = []
        self._flush_lock = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()
        self._checkpoint_failed = False
        self._started = time.perf_counter()
        self.read = 0
        self.changed = 0
        self.transitions = 0

    async def over(self, docs: AsyncIterator[Any]) -> None:
        async def numbered() -> AsyncIterator[tuple[int, Mapping[str, Any]]]:
            try:
                async for doc in docs:
                    index = self.tracker.started(doc.get("user_id")) if self.tracker else 0
                    yield index, doc
            finally:
                aclose = getattr(docs, "aclose", None)
                if aclose is not None:
                    await aclose()  # the cursor now, not when collected

        async def group(users: list[tuple[int, Mapping[str, Any]]]) -> None:
            self.read += len(users)
            self._s.metrics.sweep_documents_read.labels(self._mode).inc(len(users))
            # One relay ticket per group: closed (published) by the first flush after
            # every entry the group appended is queued for relay.
            ticket = await self._s.relay.open_ticket() if self._apply else None
            if ticket is not None:
                self._open_tickets.append(ticket)
            outcomes = await self._s.writer.update_round(
                [UserToWrite(doc, (), self._cause) for _, doc in users],
                self._now,
                dataclasses.replace(self._options, ticket=ticket),
            )
            for (index, doc), outcome in zip(users, outcomes, strict=True):
                await self._user(index, await self._one(doc, outcome))
            if ticket is not None:
                self._queued_tickets.append(ticket)

        # One group of ``concurrency`` users at a time, planned together and written in
        # one bulk (UserWriter.update_round): as many users in hand as before (the setting
        # bounds them, and memory), one write command per group instead of one per changed
        # user; the next group's documents are read ahead.
        size = self._s.concurrency
        try:
            await for_each_bounded(in_groups(numbered(), size), group, 1)
            await self._flush()
        finally:
            for ticket in self._open_tickets:  # not published: their relays did not happen
                self._s.relay.ledger.close(ticket, published=False)
            self._open_tickets.clear()

    async def _user(self, index: int, entry: UserLog | None) -> None:
        if self.tracker is None:
            if entry is not None and self._spill is not None:
                self._spill.add(entry)
            return
        self.tracker.finished(index, None if entry is None else encode(entry))
        if self.tracker.checkpoint_due():
            await self.checkpoint()

    async def checkpoint(self, *, final: bool = False) -> None:
        """Save the entries and the last user of the users done in order so far."""
        tracker, sweep_id = self.tracker, self._sweep_id
        if tracker is None or sweep_id is None:
            return
        async with self._checkpoint_lock:
            if self._checkpoint_failed:
                # The entries taken by the failed one are lost with it: a later checkpoint
                # would claim their users. The sweep stops and resumes from the last good.
                raise StoreUnavailableError(f"sweep {sweep_id}: an earlier checkpoint failed")
            try:
                await self._flush()  # their events published (or durably queued) first
                # Taken together: users keep finishing while the chunks are saved, and the
                # checkpoint may claim only the users whose entries it holds.
                entries, last_user_id = tracker.take(), tracker.resume_after
                groups = _chunks(entries)
                for position, group in enumerate(groups):
                    batch_end = position == len(groups) - 1
                    await self._s.store.save_sweep_chunk(
                        SweepChunk(
                            sweep_id,
                            tracker.next_seq(),
                            last_user_id if batch_end else None,
                            batch_end,
                            group,
                            read_all=final and batch_end,
                        )
                    )
            except BaseException:
                self._checkpoint_failed = True
                raise
            log.info(
                "sweep_checkpoint",
                sweep_id=sweep_id,
                last_user_id=last_user_id,
                documents_read=self.read,
            )

    async def _one(self, doc: Mapping[str, Any], outcome: RoundOutcome) -> UserLog | None:
        """Settle one user of a written group; its check-log entry, if any."""
        if isinstance(outcome, Exception):
            # The writer already re-read and retried conflicts; the policy says whether this
            # user is skipped (reported, counted) or the whole sweep waits and resumes (a
            # fault of the group's whole bulk is raised by the writer: the sweep stops).
            decision = decide(outcome, Path.SWEEP_USER)
            if decision.action is not Action.SKIP_USER:
                raise outcome
            if isinstance(outcome, DocumentError):
                return await self._unreadable(doc, outcome)
            return self._skipped(doc.get("user_id"), decision.verdict, outcome)
        result = outcome
        # With the transitions this sweep made before it was interrupted, if any.
        entry = sweep_entry(result.update.evaluation, result.update.sweep)
        if result.written:
            self.changed += 1
            self._s.metrics.sweep_documents_changed.labels(self._mode).inc()
            for t in result.update.evaluation.transitions:
                self.transitions += 1
                self._s.metrics.transitions.labels(
                    t.from_status, t.to_status, f"tick_{self._mode}"
                ).inc()
            if self._spill is None and self.tracker is None:
                self._s.summary.add(entry)
        if result.outbox:
            self._pending.append((result.doc_id, result.outbox))
            if len(self._pending) >= _RELAY_CHUNK:
                await self._flush()
        return entry

    def _skipped(self, user_id: object, verdict: Verdict, exc: BaseException) -> UserLog:
        """Report a user the sweep passes over (its check-log ``skipped_list``)."""
        self._s.metrics.sweep_users_skipped.labels(self._mode, verdict.reason).inc()
        log.warning(
            "sweep_user_skipped",
            user_id=user_id,
            reason=verdict.reason,
            code=verdict.code,
            error=repr(exc)[:300],
        )
        reason = f"skipped ({verdict.reason}): {exc!r}"[:2000]
        return UserLog(read_int(user_id) or 0, (), ((None, reason),))

    async def _unreadable(self, doc: Mapping[str, Any], exc: DocumentError) -> UserLog:
        """Report a document the rules cannot read; mark it evaluated so that due sweeps
        stop taking it for a never-evaluated one (until it is written again)."""
        log.warning(
            "bad_document_skipped",
            user_id=doc.get("user_id"),
            doc_id=str(doc.get("_id")),
            reason=str(exc),
        )
        if self._apply and "_id" in doc:
            await self._s.store.mark_unreadable(doc, self._now)
        user_id = read_int(doc.get("user_id")) or 0
        return UserLog(user_id, (), ((None, f"document _id {doc.get('_id')!s}: {exc}"),))

    async def _flush(self) -> None:
        async with self._flush_lock:
            pending, self._pending = self._pending, []
            # Only the groups whose every entry is in ``pending`` are over with this relay.
            tickets, self._queued_tickets = self._queued_tickets, []
            await self._s.relay.relay(pending)
            for ticket in tickets:
                self._open_tickets.remove(ticket)
                self._s.relay.ledger.close(ticket, published=True)
            if pending:
                # From the time the tick asked for (its cause) to the changes published.
                latency = max(0.0, time.time() - self._now.timestamp())
                histogram = self._s.metrics.end_to_end_latency.labels(f"tick_{self._mode}")
                for _ in pending:
                    histogram.observe(latency)

    def finish(self, check_log_ids: tuple[int, ...]) -> SweepResult:
        elapsed = time.perf_counter() - self._started
        metrics = self._s.metrics
        metrics.sweep_duration.labels(self._mode).observe(elapsed)
        metrics.last_sweep_completed.labels(self._mode).set(time.time())
        log.info(
            "sweep_completed",
            mode=self._mode,
            apply=self._apply,
            documents_read=self.read,
            documents_changed=self.changed,
            transitions=self.transitions,
            seconds=round(elapsed, 3),
            cause_event_id=self._cause.event_id,
        )
        return SweepResult(self.read, self.changed, self.transitions, check_log_ids)


def _chunks(entries: list[EncodedEntry]) -> list[list[dict[str, Any]]]:
    """Entries as checkpoint documents' lists, each under :data:`_CHUNK_BYTES` (at least
    one list, maybe empty: the checkpoint then carries only the progress)."""
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + len(entry.json) > _CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(
            {"u": entry.user_id, "b": entry.bson_size, "s": entry.size, "j": entry.json}
        )
        size += len(entry.json)
    return groups
