"""Tick sweeps: ``due`` (only the users whose next change is due) and ``full`` (the old job)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import CacheStore
from consumer.domain.checklog import UserLog, user_log
from consumer.domain.events import Cause
from consumer.errors import DocumentError
from consumer.logs import get_logger
from consumer.service.checklog import CheckLogSink, IntervalSummary
from consumer.service.outbox import OutboxRelay
from consumer.service.pool import for_each_bounded
from consumer.service.writer import UserWriter

log = get_logger(__name__)

_RELAY_CHUNK = 200  # documents whose outboxes are published together


@dataclass(frozen=True, slots=True)
class SweepResult:
    documents_read: int
    documents_changed: int
    transitions: int
    check_log: tuple[dict[str, Any], ...]


class Sweeper:
    def __init__(
        self,
        store: CacheStore,
        writer: UserWriter,
        relay: OutboxRelay,
        sink: CheckLogSink,
        summary: IntervalSummary,
        metrics: Metrics,
        concurrency: int,
    ) -> None:
        self.store = store
        self.writer = writer
        self.relay = relay
        self.sink = sink
        self.summary = summary
        self.metrics = metrics
        self.concurrency = concurrency

    async def due(
        self, tick_at: datetime, shard: int, shards: int, apply: bool, cause: Cause
    ) -> SweepResult:
        """Evaluate, as of ``tick_at``, the users due by then (and those never evaluated)."""
        run = _SweepRun(self, tick_at, apply, cause, "due", collect_logs=not apply)
        await run.over(self.store.due_users(tick_at, shard, shards))
        check_log: list[dict[str, Any]] = []
        if not apply:
            check_log = await self.sink.write(tick_at, None, False, run.logs(), kind="due")
        return run.finish(check_log)

    async def full(
        self, user_id: int | None, apply: bool, check_time: datetime, cause: Cause
    ) -> SweepResult:
        """The old job: one user or all, dry-run or apply; always writes one check-log."""
        run = _SweepRun(self, check_time, apply, cause, "full", collect_logs=True)
        await run.over(self.store.all_users(user_id))
        check_log = await self.sink.write(
            check_time, user_id, apply, run.logs(), kind="full", traceparent=cause.traceparent
        )
        return run.finish(check_log)


class _SweepRun:
    """The state of one sweep: counters, logs of users with entries, outboxes to relay."""

    def __init__(
        self,
        sweeper: Sweeper,
        now: datetime,
        apply: bool,
        cause: Cause,
        mode: str,
        *,
        collect_logs: bool,
    ) -> None:
        self._s = sweeper
        self._now = now
        self._apply = apply
        self._cause = cause
        self._mode = mode
        self._collect = collect_logs
        self._logs: dict[int, UserLog] = {}
        self._pending: list[tuple[Any, tuple[dict[str, Any], ...]]] = []
        self._flush_lock = asyncio.Lock()
        self._started = time.perf_counter()
        self.read = 0
        self.changed = 0
        self.transitions = 0

    async def over(self, docs: Any) -> None:
        await for_each_bounded(docs, self._one, self._s.concurrency)
        await self._flush()

    async def _one(self, doc: Mapping[str, Any]) -> None:
        self.read += 1
        self._s.metrics.sweep_documents_read.labels(self._mode).inc()
        user_id = doc.get("user_id")
        try:
            result = await self._s.writer.update(
                doc,
                (),
                self._now,
                self._cause,
                apply=self._apply,
            )
        except DocumentError as exc:
            log.warning(
                "bad_document_skipped", user_id=user_id, doc_id=str(doc.get("_id")), reason=str(exc)
            )
            return
        entry = user_log(result.update.evaluation)
        if self._collect and entry is not None:
            self._logs[entry.user_id] = entry
        if result.written:
            self.changed += 1
            self._s.metrics.sweep_documents_changed.labels(self._mode).inc()
            for t in result.update.evaluation.transitions:
                self.transitions += 1
                self._s.metrics.transitions.labels(
                    t.from_status, t.to_status, f"tick_{self._mode}"
                ).inc()
            if not self._collect:
                self._s.summary.add(entry)
        if result.outbox:
            self._pending.append((result.doc_id, result.outbox))
            if len(self._pending) >= _RELAY_CHUNK:
                await self._flush()

    async def _flush(self) -> None:
        async with self._flush_lock:
            pending, self._pending = self._pending, []
            await self._s.relay.relay(pending)

    def logs(self) -> list[UserLog]:
        return [self._logs[k] for k in sorted(self._logs)]

    def finish(self, check_log: list[dict[str, Any]]) -> SweepResult:
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
        return SweepResult(self.read, self.changed, self.transitions, tuple(check_log))
