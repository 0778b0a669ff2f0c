"""Read-modify-write of one user's document with optimistic concurrency.

The write applies only if the document's passes are as read; on a conflict (another
replica, or the refresher) the document is re-read and the events re-applied to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import UserStore
from consumer.domain.events import Cause, TicketUsed
from consumer.domain.outbox import relay_after_write
from consumer.domain.user_update import UserUpdate, plan_user_update
from consumer.errors import DocumentError, WriteConflictError
from consumer.logs import get_logger
from consumer.service.write_batch import WriteBatch

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UserResult:
    """The outcome of one user's read-modify-write."""

    doc_id: Any
    update: UserUpdate
    written: bool
    # The events to relay, head first: see consumer.domain.outbox.relay_after_write.
    outbox: tuple[dict[str, Any], ...]


class UserWriter:
    def __init__(self, store: UserStore, metrics: Metrics, conflict_retries: int) -> None:
        self._store = store
        self._metrics = metrics
        self._retries = conflict_retries

    async def update(
        self,
        first_read: Mapping[str, Any],
        events: Sequence[TicketUsed],
        now: datetime,
        cause: Cause,
        *,
        apply: bool = True,
        relay_pending: bool = False,
        sweep_id: str | None = None,
        batch: WriteBatch | None = None,
    ) -> UserResult:
        """Plan against ``first_read``; write it (when ``apply``); re-read on conflict.
        A full sweep gives its ``sweep_id`` (``consumer.domain.sweep_log``). With a
        ``batch``, the write goes in its bulk (a retry after a conflict, alone).

        Raises :class:`DocumentError` for a document without a usable ``user_id`` and
        :class:`WriteConflictError` after ``conflict_retries`` lost races in a row.
        """
        doc: Mapping[str, Any] | None = first_read
        for _attempt in range(self._retries + 1):
            if doc is None:
                raise DocumentError("document disappeared between read and write")
            update = plan_user_update(doc, events, now, cause, sweep_id)
            if not apply:
                return UserResult(doc["_id"], update, False, ())
            if not update.writes_document:
                relay = relay_after_write(doc, (), written=False, relay_pending=relay_pending)
                return UserResult(doc["_id"], update, False, relay)
            written = (
                await batch.write(doc, update, now)
                if batch is not None
                else await self._store.write_user(doc, update, now)
            )
            if written:
                relay = relay_after_write(
                    doc, update.outbox, written=True, relay_pending=relay_pending
                )
                return UserResult(doc["_id"], update, True, relay)
            self._metrics.write_conflicts.inc()
            log.info("write_conflict", user_id=update.user_id)
            doc = await self._store.find_user(update.user_id)
        raise WriteConflictError(f"user {first_read.get('user_id')!r}: document kept changing")
