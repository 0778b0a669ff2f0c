"""Liveness and readiness state, shared by the service's tasks and the HTTP server.

- **Liveness** (``/healthz``): the event loop turns and the service's tasks are alive.
  :func:`watch_event_loop` wakes every ``interval`` seconds, measures how late it woke (the
  event-loop lag) and refreshes the heartbeat. It runs from the first instant of the
  process, so waiting for MongoDB or Kafka at start, backing off, or a long batch (all
  awaits) keep the service live; only a loop blocked for ``max_stall_seconds`` or a watched
  task that ended on its own fail it.
- **Readiness** (``/readyz``, ``pass_status_ready``): the consumer can do useful work now:
  started, in the group, MongoDB and Kafka reachable, no fault outstanding, not stopping.
  Each part that retries (the consume loop, each tick partition, the background jobs)
  records its own fault under its own name (``faults``: name -> action and reason) and
  clears only its own: one finishing never hides another that is still failing. A
  replica with no partitions (more replicas than partitions) is ready: it is a standby that
  takes partitions at the next rebalance, and marking it unready would stall rollouts and
  node drains and page for nothing. ``assigned_partitions`` is reported beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Health:
    """Mutable health facts; the tasks set them, the HTTP server reads them."""

    max_stall_seconds: float = 30.0
    started: bool = False
    joined_group: bool = False
    assigned_partitions: int = 0
    mongodb_ok: bool = False
    kafka_ok: bool = False
    stopping: bool = False
    last_error: str = ""
    faults: dict[str, str] = field(default_factory=dict)
    heartbeat: float = field(default_factory=time.monotonic)
    loop_lag_seconds: float = 0.0
    _watched: dict[str, asyncio.Task[object]] = field(default_factory=dict)

    def ready(self) -> bool:
        """Ready: in the group, both stores reachable, no fault, not stopping."""
        return (
            self.started
            and self.joined_group
            and self.mongodb_ok
            and self.kafka_ok
            and not self.faults
            and not self.stopping
        )

    @property
    def backing_off(self) -> bool:
        """Some part is retrying or paused."""
        return bool(self.faults)

    def fault(self, source: str, description: str) -> None:
        """``source`` is retrying or paused because of ``description`` (action: reason)."""
        self.faults[source] = description
        self.last_error = description

    def cleared(self, source: str) -> bool:
        """``source`` works again; True if it had a fault."""
        return self.faults.pop(source, None) is not None

    def beat(self, loop_lag_seconds: float) -> None:
        self.heartbeat = time.monotonic()
        self.loop_lag_seconds = loop_lag_seconds

    def watch(self, name: str, task: asyncio.Task[object]) -> None:
        """Fail liveness if ``task`` ends while the service is not stopping."""
        self._watched[name] = task

    def dead_tasks(self) -> list[str]:
        if self.stopping:
            return []
        return sorted(name for name, task in self._watched.items() if task.done())

    def alive(self) -> bool:
        stalled = time.monotonic() - self.heartbeat >= self.max_stall_seconds
        return not stalled and not self.dead_tasks()

    def liveness_report(self) -> dict[str, object]:
        return {
            "alive": self.alive(),
            "seconds_since_heartbeat": round(time.monotonic() - self.heartbeat, 3),
            "max_stall_seconds": self.max_stall_seconds,
            "event_loop_lag_seconds": round(self.loop_lag_seconds, 4),
            "dead_tasks": self.dead_tasks(),
        }

    def report(self) -> dict[str, object]:
        return {
            "ready": self.ready(),
            "started": self.started,
            "joined_group": self.joined_group,
            "assigned_partitions": self.assigned_partitions,
            "mongodb_ok": self.mongodb_ok,
            "kafka_ok": self.kafka_ok,
            "backing_off": self.backing_off,
            "faults": dict(sorted(self.faults.items())),
            "stopping": self.stopping,
            "last_error": self.last_error,
        }


async def watch_event_loop(
    health: Health, observe_lag: Callable[[float], None], interval: float = 0.1
) -> None:
    """Refresh the heartbeat every ``interval`` seconds and observe the loop's lag.

    The lag is how much later than asked the sleep returned: the time other callbacks held
    the loop. A loop blocked by CPU-bound or synchronous code shows here first.
    """
    loop = asyncio.get_running_loop()
    while True:
        asked_at = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asked_at - interval)
        observe_lag(lag)
        health.beat(lag)
