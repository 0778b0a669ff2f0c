"""Per-document locks held together, with a little state shared while they are in use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")


@dataclass(slots=True)
class _Entry(Generic[S]):
    lock: asyncio.Lock
    state: S
    users: int = 0


class DocumentLocks(Generic[S]):
    """One lock per key, created on first use and dropped when no task holds or awaits it.

    Each key also carries a state object (``new_state()``), shared by the tasks that hold
    or await its lock, and dropped with it: memory stays bounded by the keys in use.
    """

    def __init__(self, new_state: Callable[[], S]) -> None:
        self._new_state = new_state
        self._entries: dict[Hashable, _Entry[S]] = {}

    @contextlib.asynccontextmanager
    async def holding(self, keys: Sequence[Hashable]) -> AsyncIterator[dict[Hashable, S]]:
        """Hold every key's lock (taken in sorted order, so that two holders of
        overlapping keys cannot deadlock); yields each key's state."""
        ordered = sorted(set(keys))  # type: ignore[type-var]  # callers give sortable keys
        entries = []
        for key in ordered:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(asyncio.Lock(), self._new_state())
            entry.users += 1
            entries.append(entry)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for entry in entries:
                    await stack.enter_async_context(entry.lock)
                yield {key: entry.state for key, entry in zip(ordered, entries, strict=True)}
        finally:
            for key, entry in zip(ordered, entries, strict=True):
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
