"""``python -m consumer`` with the documents each of its updates rewrote counted.

    BENCH_STORE_COUNTS=counts.json python -m bench.counted run

The consumer's own metrics count round trips (``pass_status_mongodb_commands_total``), not
the documents an unordered bulk modified. This registers a PyMongo command listener for
every client of the process, then runs the consumer unchanged (``runpy``, same process, so
its PID, CPU and memory are the consumer's). Each acknowledged ``update`` command adds its
reply's ``nModified`` to ``user_writes`` when its statements set the user's evaluation time
(the service's conditional write of a user), to ``other`` otherwise (outbox clears, rejects,
sweep bookkeeping). The totals are rewritten to ``$BENCH_STORE_COUNTS`` (atomically) after
each update, so the benchmark reads them at the end of a drain.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

import orjson
from consumer.domain.user_update import CHECKED_AT
from pymongo import monitoring

ENV = "BENCH_STORE_COUNTS"


class RewriteCounter(monitoring.CommandListener):
    """Documents modified by ``update`` commands, by kind; written to ``path``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counts: dict[str, int] = {
            "update_commands": 0,
            "update_statements": 0,
            "user_writes": 0,
            "other": 0,
        }
        self._kinds: dict[int, str] = {}  # request id -> kind, until its reply

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name != "update":
            return
        updates: list[Any] = list(event.command.get("updates") or [])
        self.counts["update_commands"] += 1
        self.counts["update_statements"] += len(updates)
        writes = any(CHECKED_AT in (u.get("u") or {}).get("$set", {}) for u in updates)
        self._kinds[event.request_id] = "user_writes" if writes else "other"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        kind = self._kinds.pop(event.request_id, None)
        if kind is None:
            return
        self.counts[kind] += int(event.reply.get("nModified", 0))
        self.save()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._kinds.pop(event.request_id, None)

    def save(self) -> None:
        if self.path is None:
            return
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(self.counts))
        partial.replace(self.path)


def read_counts(path: Path) -> dict[str, int] | None:
    """What a counted consumer wrote to ``path`` (None if it wrote nothing: no update)."""
    try:
        counts: dict[str, int] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return counts


def main() -> None:
    path = os.environ.get(ENV)
    monitoring.register(RewriteCounter(Path(path) if path else None))
    sys.argv = ["consumer", *sys.argv[1:]]
    runpy.run_module("consumer", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
