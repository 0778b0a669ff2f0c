"""Bounded concurrency over an async stream, in constant memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


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
        task = asyncio.current_task()
        while (item := await queue.get()) is not done:
            await worker(item)
            if task is not None and task.cancelling():
                # A cancellation swallowed inside ``worker`` (PyMongo's async client can
                # lose one): stop, or this task would wait for an item that never comes.
                raise asyncio.CancelledError

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(feed())
            for _ in range(concurrency):
                group.create_task(work())
    except BaseExceptionGroup as group_error:
        # Callers handle one error (a transient fault, say), not a group of them.
        raise group_error.exceptions[0] from None
    finally:
        # Close the stream now (a MongoDB cursor, say), not when it is garbage collected.
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def in_groups(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter); closing it closes ``items``."""
    group: list[T] = []
    try:
        async for item in items:
            group.append(item)
            if len(group) >= size:
                yield group
                group = []
        if group:
            yield group
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def gather_or_first_error(coroutines: Iterable[Coroutine[object, object, R]]) -> list[R]:
    """Run all; if one fails, cancel the others and raise its error (not a group).

    Unlike ``asyncio.gather``, no sibling keeps writing in the background after a
    failure, while the caller already retries the same work.
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [task.result() for task in tasks]
