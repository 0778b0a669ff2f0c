"""One sweep in a process of its own: ``python -m bench.sweep_once due|full``.

``due``: builds the service's core from the ``PASS_STATUS_*`` variables
(``consumer.app.core``) and runs :meth:`Sweeper.due` (``tick_at`` = now, one shard, apply).
``full``: runs ``consumer.app.run_full_check`` (all users, apply): exactly what
``python -m consumer check --all --apply`` runs. Either way the code measured is the
checked-out service's own.

A monitor task runs beside the sweep on the same event loop: it asks to wake every 5 ms
and records how late it wakes. The longest delay is the longest time the loop was blocked
(heartbeats, ``/healthz`` and every other task wait that long). Prints one JSON line:
seconds, documents_read, documents_changed, transitions, check_log_documents,
longest_stall_ms, stalls_over_100ms, and its own peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from consumer.app import core, run_full_check
from consumer.domain.events import Cause, CauseType
from consumer.service.sweeps import SweepResult
from consumer.settings import Settings

_PERIOD = 0.005  # seconds between the monitor's wake-ups


@dataclass(slots=True)
class LoopMonitor:
    """The longest time the event loop did not run a task that was due."""

    longest: float = 0.0
    over_100ms: int = 0

    async def watch(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(_PERIOD)
            late = time.perf_counter() - asked - _PERIOD
            self.longest = max(self.longest, late)
            if late > 0.1:
                self.over_100ms += 1


async def _due(settings: Settings) -> SweepResult:
    async with core(settings) as c:
        await c.store.ensure_indexes()
        await c.producer.start()
        cause = Cause(CauseType.TICK, f"bench-{uuid.uuid4()}")
        return await c.sweeper.due(datetime.now(UTC), 0, 1, True, cause)


async def sweep(mode: str) -> dict[str, float | int]:
    settings = Settings.from_env(os.environ)
    monitor = LoopMonitor()
    watching = asyncio.create_task(monitor.watch())
    started = time.perf_counter()
    if mode == "due":
        result = await _due(settings)
    else:
        result = await run_full_check(settings, None, apply=True)
    seconds = time.perf_counter() - started
    watching.cancel()
    return {
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
        "seconds": round(seconds, 3),
        "documents_read": result.documents_read,
        "documents_changed": result.documents_changed,
        "transitions": result.transitions,
        "check_log_documents": len(result.check_log_ids),
        "longest_stall_ms": round(1000 * monitor.longest, 1),
        "stalls_over_100ms": monitor.over_100ms,
    }


def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM). Not ``wait4`` in the parent: Linux carries the
    parent's peak into a child's ``ru_maxrss`` across fork and exec, so the child would
    report the benchmark process's size whenever that is larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in {"due", "full"}:
        sys.stderr.write("usage: python -m bench.sweep_once due|full\n")
        return 2
    sys.stdout.write(orjson.dumps(asyncio.run(sweep(args[0]))).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
