"""The conditional writes of one batch's users, sent to the store as one unordered bulk.

Each user of a batch is handled by its own task (:class:`TicketUsedHandler`), which plans
its write and hands it here (:meth:`WriteBatch.write`). Once every member has either
handed in its write or finished without one, the last to arrive sends them all in one
:meth:`UserStore.write_users` call, and each member gets its own outcome: written, a
conflict (the writer re-reads and re-plans that user alone, as before), or that user's
error (a document the store refuses), raised in the member's task so that the per-user
handling is the same as for a single write. A fault of the whole bulk (the store down)
is a fault of the batch: raised in every member that wrote, and in the one that sent it.
Writes after the bulk (a conflicted user's retry) go one at a
time, at most ``concurrency`` in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from consumer.adapters.store_ports import UserStore
from consumer.domain.user_update import UserUpdate


class WriteBatch:
    def __init__(self, store: UserStore, members: int, concurrency: int) -> None:
        self._store = store
        self._waiting = members  # members not yet arrived
        self._arrived: set[asyncio.Task[Any]] = set()
        self._writes: list[tuple[Mapping[str, Any], UserUpdate, asyncio.Future[bool]]] = []
        self._now: datetime | None = None
        self._sent = False
        self._single = asyncio.Semaphore(concurrency)

    @contextlib.asynccontextmanager
    async def member(self) -> AsyncIterator[None]:
        """One member's part: it arrives, if it has not written, when it leaves."""
        try:
            yield
        finally:
            if self._arrive():
                await self._send()

    async def write(self, read: Mapping[str, Any], update: UserUpdate, now: datetime) -> bool:
        """Write ``update`` if the document is still as read; False on conflict."""
        if self._sent or asyncio.current_task() in self._arrived:
            async with self._single:
                return await self._store.write_user(read, update, now)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._writes.append((read, update, outcome))
        self._now = now
        if self._arrive():
            try:
                await self._send()
            except BaseException:
                if outcome.done() and not outcome.cancelled():
                    outcome.exception()  # the same error, raised here
                raise
        return await outcome

    def _arrive(self) -> bool:
        """Count the current task in; True if it is the last member to arrive."""
        task = asyncio.current_task()
        if task is None or task in self._arrived or self._sent:
            return False
        self._arrived.add(task)
        self._waiting -= 1
        return self._waiting <= 0

    async def _send(self) -> None:
        self._sent = True
        writes, self._writes = self._writes, []
        if not writes or self._now is None:
            return
        try:
            outcomes = await self._store.write_users([(r, u) for r, u, _ in writes], self._now)
        except BaseException as exc:  # the whole bulk failed: a fault of the batch, raised
            for _, _, future in writes:  # in every member that wrote, and in the sender
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            raise
        for (_, _, future), outcome in zip(writes, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
