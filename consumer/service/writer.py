"""Read-modify-write of users' documents with optimistic concurrency, a round at a time.

A round (a ticket-used batch's users as read, or a group of a sweep) is planned against
the documents as read, with no I/O, and its writes go to the store in one unordered bulk
(:meth:`UserStore.write_users`). A write applies only if the document's passes are as
read; on a conflict (another replica, or the refresher) that user alone is re-read and its
events re-applied (:meth:`UserWriter.update`). No task per user: a round costs one plan
loop and one command, whatever its size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import UserStore
from consumer.domain.events import Cause, TicketUsed
from consumer.domain.outbox import relay_after_write
from consumer.domain.user_update import UserUpdate, plan_user_update
from consumer.errors import DocumentError, PassStatusError, WriteConflictError
from consumer.logs import get_logger
from consumer.service.pool import gather_or_first_error
from consumer.service.relay_ledger import RelayLedger, RelayTicket

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UserResult:
    """The outcome of one user's read-modify-write."""

    doc_id: Any
    update: UserUpdate
    written: bool
    # The events to relay, head first: see consumer.domain.outbox.relay_after_write.
    outbox: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class UserToWrite:
    """One user of a round: its document as read, the events to apply, their cause."""

    read: Mapping[str, Any]
    events: Sequence[TicketUsed]
    cause: Cause


# A user's outcome in a round: its result, or its own error (this user's document unusable
# or refused, its conflicts never settled, a fault met while re-reading it alone), for the
# caller to decide on with the failure policy. A fault of the whole bulk is raised instead.
RoundOutcome = UserResult | Exception


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How a round is written: ``apply`` (False: a dry run, nothing written);
    ``relay_pending`` (the ticket-used partition owner relays a user's outbox not known
    published even when it writes nothing); ``ticket``: the relay whose key the writes
    stamp; ``sweep_id`` of a resumable full sweep
    (``consumer.domain.sweep_log``); ``concurrency``: conflicted users re-read at once."""

    concurrency: int
    apply: bool = True
    relay_pending: bool = False
    sweep_id: str | None = None
    # The relay that publishes what the round appends (OutboxRelay.batch); needed to write.
    ticket: RelayTicket | None = None


class UserWriter:
    def __init__(
        self, store: UserStore, metrics: Metrics, conflict_retries: int, ledger: RelayLedger
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._retries = conflict_retries
        self._ledger = ledger

    def _plan(
        self, read: Mapping[str, Any], user: UserToWrite, now: datetime, options: WriteOptions
    ) -> UserUpdate:
        ticket = options.ticket
        relaying = None if ticket is None else self._ledger.relaying(ticket, read)
        return plan_user_update(read, user.events, now, user.cause, options.sweep_id, relaying)

    async def update_round(
        self, users: Sequence[UserToWrite], now: datetime, options: WriteOptions
    ) -> list[RoundOutcome]:
        """Plan every user, write the round in one bulk, settle each user; one outcome per
        user, in order. Raises what fails the whole bulk (the store down)."""
        plans: list[UserUpdate | DocumentError] = []
        for user in users:
            try:
                plans.append(self._plan(user.read, user, now, options))
            except DocumentError as exc:  # this user's document: its outcome, not the round's
                plans.append(exc)
        writes = [
            (user.read, plan)
            for user, plan in zip(users, plans, strict=True)
            if options.apply and isinstance(plan, UserUpdate) and plan.writes_document
        ]
        _stamping(writes, options)
        written = iter(await self._store.write_users(writes, now) if writes else ())
        outcomes: list[RoundOutcome | None] = []
        conflicted: list[tuple[int, int]] = []  # (position, user_id)
        for user, plan in zip(users, plans, strict=True):
            if isinstance(plan, DocumentError):
                outcomes.append(plan)
            elif not options.apply or not plan.writes_document:
                outcomes.append(_unwritten(user.read, plan, options))
            else:
                outcome = next(written)
                if isinstance(outcome, Exception):  # the store refused this user's write
                    outcomes.append(outcome)
                elif outcome:
                    outcomes.append(_written(user.read, plan, options))
                else:
                    self._conflict(plan.user_id)
                    conflicted.append((len(outcomes), plan.user_id))
                    outcomes.append(None)
        if conflicted:
            limit = asyncio.Semaphore(options.concurrency)

            async def alone(index: int, user_id: int) -> RoundOutcome:
                async with limit:
                    return await self._after_conflict(users[index], user_id, now, options)

            retried = await gather_or_first_error(alone(i, uid) for i, uid in conflicted)
            for (index, _), settled in zip(conflicted, retried, strict=True):
                outcomes[index] = settled
        return [o for o in outcomes if o is not None]

    async def update(
        self,
        first_read: Mapping[str, Any] | None,
        user: UserToWrite,
        now: datetime,
        options: WriteOptions,
        *,
        attempts: int | None = None,
    ) -> UserResult:
        """One user alone: plan against ``first_read``, write it, re-read on conflict, at
        most ``attempts`` writes (``conflict_retries`` + 1).

        Raises :class:`DocumentError` for a document without a usable ``user_id`` (or one
        that disappeared) and :class:`WriteConflictError` after that many lost races.
        """
        doc = first_read
        for _attempt in range(self._retries + 1 if attempts is None else attempts):
            if doc is None:
                raise DocumentError("document disappeared between read and write")
            update = self._plan(doc, user, now, options)
            if not options.apply or not update.writes_document:
                return _unwritten(doc, update, options)
            _stamping([(doc, update)], options)
            if await self._store.write_user(doc, update, now):
                return _written(doc, update, options)
            self._conflict(update.user_id)
            doc = await self._store.find_user(update.user_id)
        raise WriteConflictError(f"user {user.read.get('user_id')!r}: document kept changing")

    async def _after_conflict(
        self, user: UserToWrite, user_id: int, now: datetime, options: WriteOptions
    ) -> RoundOutcome:
        """A user whose write in the bulk conflicted: re-read, then written alone, with the
        attempts left (the bulk's was the first)."""
        if self._retries == 0:
            return WriteConflictError(f"user {user_id!r}: document kept changing")
        try:
            doc = await self._store.find_user(user_id)
            return await self.update(doc, user, now, options, attempts=self._retries)
        except PassStatusError as exc:  # this user's own outcome, decided by the caller
            return exc

    def _conflict(self, user_id: int) -> None:
        self._metrics.write_conflicts.inc()
        log.info("write_conflict", user_id=user_id)


def _stamping(
    writes: Sequence[tuple[Mapping[str, Any], UserUpdate]], options: WriteOptions
) -> None:
    """Mark the ticket stamped before writes that append are sent: once sent, one may
    land even if its answer never comes (consumer.service.relay_ledger)."""
    if options.ticket is not None and any(update.outbox for _, update in writes):
        options.ticket.stamped = True


def _written(read: Mapping[str, Any], update: UserUpdate, options: WriteOptions) -> UserResult:
    relay = relay_after_write(
        read,
        update.outbox,
        written=True,
        relay_pending=options.relay_pending,
        relaying=update.relaying,
    )
    return UserResult(read["_id"], update, True, relay)


def _unwritten(read: Mapping[str, Any], update: UserUpdate, options: WriteOptions) -> UserResult:
    if not options.apply:
        return UserResult(read["_id"], update, False, ())
    relay = relay_after_write(
        read, (), written=False, relay_pending=options.relay_pending, relaying=update.relaying
    )
    return UserResult(read["_id"], update, False, relay)
