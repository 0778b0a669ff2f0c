"""Ticket-used events: one read-modify-write per user per batch, users in parallel."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumer.adapters.kafka import OutRecord, Publisher, traceparent_of
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import UserStore
from consumer.domain.checklog import user_log
from consumer.domain.events import Cause, CauseType, TicketUsed
from consumer.errors import (
    BadDocumentError,
    DocumentError,
    InputError,
    UnknownUserError,
)
from consumer.logs import get_logger
from consumer.parsing import parse_ticket_used
from consumer.policy import Action, Fault, Path, decide
from consumer.service.checklog import IntervalSummary
from consumer.service.deadletter import InputRecord, dead_letter, failure_reason
from consumer.service.outbox import OutboxRelay
from consumer.service.relay_ledger import RelayTicket
from consumer.service.writer import RoundOutcome, UserToWrite, UserWriter, WriteOptions
from consumer.settings import DEAD_LETTER_MAX_BYTES

log = get_logger(__name__)

# A user's part of a batch: its dead letters, its outbox to relay, its events' timestamps.
_UserOutcome = tuple[list[OutRecord], list[tuple[Any, tuple[dict[str, Any], ...]]], dict[str, int]]


@dataclass(slots=True)
class _UserWork:
    records: list[InputRecord] = field(default_factory=list)
    events: list[TicketUsed] = field(default_factory=list)


@dataclass(slots=True)
class _Tally:
    """A batch's counts, added to the metrics once per label set when the batch ends (also
    when it fails: what was written stays written), not once per user."""

    consumed: Counter[tuple[str, str]] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add_to(self, metrics: Metrics) -> None:
        for (topic, outcome), n in self.consumed.items():
            metrics.events_consumed.labels(topic, outcome).inc(n)
        for (from_status, to_status), n in self.transitions.items():
            metrics.transitions.labels(from_status, to_status, "ticket_used").inc(n)


class TicketUsedHandler:
    def __init__(
        self,
        store: UserStore,
        writer: UserWriter,
        relay: OutboxRelay,
        publisher: Publisher,
        summary: IntervalSummary,
        metrics: Metrics,
        *,
        group_id: str,
        dead_letter_topic: str,
        max_message_bytes: int,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        concurrency: int,
    ) -> None:
        self._store = store
        self._writer = writer
        self._relay = relay
        self._publisher = publisher
        self._summary = summary
        self._metrics = metrics
        self._group_id = group_id
        self._dlq_topic = dead_letter_topic
        self._max_bytes = max_message_bytes
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._concurrency = concurrency

    async def handle(self, records: list[InputRecord]) -> None:
        """Apply a batch; returns once its effects are durable and its events published.

        Raises :class:`consumer.errors.TransientError` if MongoDB or Kafka fails; nothing of
        the batch may then be committed (re-applying it is harmless: the rules are
        idempotent and pending outbox entries are re-published).
        """
        now = datetime.now(UTC)
        dead: list[OutRecord] = []
        by_user: dict[int, _UserWork] = defaultdict(_UserWork)
        for record in records:
            try:
                event = parse_ticket_used(record.value, self._max_bytes)
            except InputError as exc:
                dead.append(self._dead(record, exc, now))
                continue
            traceparent = traceparent_of(record.headers)
            if traceparent:
                event = dataclasses.replace(event, traceparent=traceparent)
            work = by_user[event.user_id]
            work.records.append(record)
            work.events.append(event)

        tally = _Tally()
        pending: list[tuple[Any, tuple[dict[str, Any], ...]]] = []
        timestamps: dict[str, int] = {}
        # One relay per batch: its writes stamp its key, and once it is acknowledged the
        # source's watermark says so (no second write of any document).
        async with self._relay.batch() as ticket:
            try:
                results = await self._users(by_user, now, tally, ticket)
            finally:
                tally.add_to(self._metrics)
            for user_dead, user_pending, user_timestamps in results:
                dead.extend(user_dead)
                pending.extend(user_pending)
                timestamps.update(user_timestamps)
            await self._relay.relay(pending)
        published = time.time()
        latency = self._metrics.end_to_end_latency.labels("ticket_used")  # once, not per event
        for ts_ms in timestamps.values():
            latency.observe(max(0.0, published - ts_ms / 1000))
        await self._publisher.publish(dead)
        for record in records:
            self._metrics.record_consumed(record.topic, record.partition, record.timestamp_ms)

    async def _users(
        self, by_user: dict[int, _UserWork], now: datetime, tally: _Tally, ticket: RelayTicket
    ) -> list[_UserOutcome]:
        """Every user's read-modify-write. One query reads every user of the batch, in
        rounds within the read budget; a round is planned, written in one bulk and settled
        (``UserWriter.update_round``: conflicts re-read one by one) before the next is read."""
        results: list[_UserOutcome] = []
        options = WriteOptions(self._concurrency, relay_pending=True, ticket=ticket)
        if by_user:
            async for docs in self._store.find_users(list(by_user)):
                round_users = [(uid, by_user.pop(uid)) for uid in docs]
                outcomes = await self._writer.update_round(
                    [
                        # The partition owner relays the user's whole pending outbox in
                        # order, so a later transition never goes out before an earlier one.
                        UserToWrite(docs[uid], work.events, _cause(work))
                        for uid, work in round_users
                    ],
                    now,
                    options,
                )
                results += [
                    self._settle(uid, work, outcome, now, tally)
                    for (uid, work), outcome in zip(round_users, outcomes, strict=True)
                ]
        for uid, work in by_user.items():
            unknown = UnknownUserError(f"no cache document for user_id {uid}")
            results.append(([self._dead(r, unknown, now) for r in work.records], [], {}))
        return results

    def _settle(
        self,
        user_id: int,
        work: _UserWork,
        outcome: RoundOutcome,
        now: datetime,
        tally: _Tally,
    ) -> _UserOutcome:
        if isinstance(outcome, Exception):
            # One user's failure: dead-lettered if the policy says it is this user's (a
            # document the store refuses for good), else raised for the whole batch.
            decision = decide(outcome, Path.INPUT)
            if decision.action is not Action.DEAD_LETTER:
                raise outcome
            if decision.verdict.fault is Fault.BUG:
                log.failure(
                    "user_failed",
                    outcome,
                    user_id=user_id,
                    topic=work.records[-1].topic,
                    partition=work.records[-1].partition,
                    offset=work.records[-1].offset,
                )
            error = (
                BadDocumentError(f"user {user_id}: {outcome}") if _unusable(outcome) else outcome
            )
            return [self._dead(r, error, now) for r in work.records], [], {}
        result = outcome
        update = result.update
        rejected_ids = {id(r.event) for r in update.rejected}
        dead = [
            self._dead(record, rej.error, now)
            for record, event in zip(work.records, work.events, strict=True)
            for rej in update.rejected
            if rej.event is event
        ]
        topic = work.records[0].topic
        applied = sum(1 for e in work.events if id(e) not in rejected_ids)
        tally.consumed[topic, "applied" if result.written else "no_change"] += applied
        timestamps: dict[str, int] = {}
        if result.written:
            for t in update.evaluation.transitions:
                tally.transitions[t.from_status, t.to_status] += 1
            self._summary.add(user_log(update.evaluation))
            stamp = {
                e.pass_uuid: r.timestamp_ms for r, e in zip(work.records, work.events, strict=True)
            }
            for entry in update.outbox:
                ts = stamp.get(entry["pass_uuid"])
                if ts is not None:
                    timestamps[entry["event_id"]] = ts
            log.info(
                "user_updated",
                user_id=user_id,
                topic=topic,
                partition=work.records[-1].partition,
                offset=work.records[-1].offset,
                transitions=[(t.pass_uuid, t.status_log) for t in update.evaluation.transitions],
                first_use_set=len(update.first_use_sets),
            )
        return dead, [(result.doc_id, result.outbox)] if result.outbox else [], timestamps

    async def handle_each(self, records: list[InputRecord]) -> None:
        """Apply records one at a time, dead-lettering each that fails for good.

        For a batch whose failure the policy answers with *dead-letter*: the record at
        fault goes to the dead-letter topic with its reason and the others apply. Failures
        answered otherwise (retry, pause) propagate, as from :meth:`handle`.
        """
        for record in records:
            try:
                await self.handle([record])
            except Exception as exc:
                decision = decide(exc, Path.INPUT)
                if decision.action is not Action.DEAD_LETTER:
                    raise
                log.warning(
                    "event_failed",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=decision.verdict.reason,
                    error=repr(exc)[:300],
                )
                await self._publisher.publish([self._dead(record, exc, datetime.now(UTC))])
                self._metrics.record_consumed(record.topic, record.partition, record.timestamp_ms)

    def _dead(self, record: InputRecord, error: Exception, now: datetime) -> OutRecord:
        reason = failure_reason(error)
        self._metrics.events_consumed.labels(record.topic, "dead_lettered").inc()
        self._metrics.dead_letters.labels(reason).inc()
        log.warning(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            message=str(error)[:300],
        )
        return dead_letter(
            record,
            error,
            now,
            self._group_id,
            self._dlq_topic,
            max_bytes=self._dead_letter_max_bytes,
        )


def _cause(work: _UserWork) -> Cause:
    """The cause of a user's transitions not named by one of its events: its last event."""
    return Cause(CauseType.TICKET_USED, work.events[-1].event_id, work.events[-1].traceparent)


def _unusable(exc: BaseException) -> bool:
    """A document the rules cannot use (no readable user_id): dead-lettered as
    ``bad_document``, the input error of that case."""
    return isinstance(exc, DocumentError)
