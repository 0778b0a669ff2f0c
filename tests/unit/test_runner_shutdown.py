"""Shutdown of the consume loop's background tasks survives a lost cancellation.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives as its inner
call finishes (fixed in 3.12). A periodic job (the health probes use ``wait_for``) that loses
the one ``cancel()`` of shutdown went back to sleep, and shutdown waited for it until the
grace ran out: SIGTERM shortly after a start took the full grace and exited 1.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from consumer.service.checklog import IntervalSummary
from consumer.service.health import Health
from consumer.service.runner import Runner


class _Consumer:
    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


class _NoTicks:
    """No tick in flight: nothing to finish."""

    def __len__(self) -> int:
        return 0

    async def finish(self, grace: float) -> None:
        pass


def _runner() -> tuple[Runner, _Consumer]:
    runner = Runner.__new__(Runner)
    consumer = _Consumer()
    attributes: dict[str, Any] = {
        "_settings": SimpleNamespace(shutdown_grace_seconds=30.0),
        "_health": Health(),
        "_tick_tasks": _NoTicks(),
        "_summary": IntervalSummary(),
        "_consumer": consumer,
        "_stop": asyncio.Event(),
    }
    for name, value in attributes.items():
        setattr(runner, name, value)
    return runner, consumer


async def test_a_background_task_that_loses_its_cancellation_does_not_hold_up_shutdown() -> None:
    lost = 0

    async def periodic_job() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # the first cancellation is lost, as in wait_for on 3.11

    runner, consumer = _runner()
    task = asyncio.create_task(periodic_job())
    await asyncio.sleep(0)
    await asyncio.wait_for(runner._shut_down([task]), 5)
    assert task.done()
    assert lost == 1
    assert consumer.stopped
