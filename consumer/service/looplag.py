"""Event-loop lag: how late the loop runs a timer, i.e. the longest step that blocked it.

A step that keeps the loop busy (a long synchronous computation) delays heartbeats to
Kafka, ``/healthz`` and every other task; no single step should block it for more than
100 ms. This watcher makes a breach visible in ``pass_status_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio

from consumer.adapters.metrics import Metrics

INTERVAL_SECONDS = 0.1


async def watch_event_loop(metrics: Metrics, interval: float = INTERVAL_SECONDS) -> None:
    """Every ``interval``, observe how much later than asked the loop woke up; forever."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - asked))
