"""Bounded concurrency over an async stream, in constant memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def for_each_bounded(
    items: AsyncIterator[T], worker: Callable[[T], Awaitable[None]], concurrency: int
) -> None:
    """Run ``worker`` on every item with at most ``concurrency`` in flight.

    The queue holds at most ``2 * concurrency`` items, so memory does not grow with the
    stream. The first worker error cancels the rest and is raised.
    """
    queue: asyncio.Queue[T] = asyncio.Queue(maxsize=2 * concurrency)
    done = object()

    async def feed() -> None:
        async for item in items:
            await queue.put(item)
        for _ in range(concurrency):
            await queue.put(done)  # type: ignore[arg-type]  # sentinel, never given to worker

    async def work() -> None:
        while (item := await queue.get()) is not done:
            await worker(item)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(feed())
            for _ in range(concurrency):
                group.create_task(work())
    except BaseExceptionGroup as group_error:
        # Callers handle one error (a transient fault, say), not a group of them.
        raise group_error.exceptions[0] from None
