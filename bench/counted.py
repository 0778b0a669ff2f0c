"""``python -m consumer`` with the documents each of its updates rewrote counted.

    BENCH_STORE_COUNTS=counts.json python -m bench.counted run

The consumer's own metrics count round trips (``pass_status_mongodb_commands_total``), not
the documents an unordered bulk modified. This registers a PyMongo command listener for
every client of the process, then runs the consumer unchanged (``runpy``, same process, so
its PID, CPU and memory are the consumer's). Each acknowledged ``update`` command adds its
reply's ``nModified`` to ``user_writes`` when its statements set the user's evaluation time
(the service's conditional write of a user), to ``other`` otherwise (outbox clears, rejects,
sweep bookkeeping). Each ``find`` and ``getMore`` of the cache collection adds the documents
its reply carried to ``documents_read`` (the capacity model charges the store per document
read and written, ``bench/capacity.py``). The totals are rewritten to
``$BENCH_STORE_COUNTS`` (atomically) after each update and each such read, so the
benchmark reads them at the end of a drain.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

import orjson
from consumer.domain.user_update import CHECKED_AT
from consumer.settings import Settings
from pymongo import monitoring

ENV = "BENCH_STORE_COUNTS"


class RewriteCounter(monitoring.CommandListener):
    """Documents modified by ``update`` commands, by kind; written to ``path``."""

    def __init__(self, path: Path | None, cache_collection: str) -> None:
        self.path = path
        self.cache_collection = cache_collection
        self.counts: dict[str, int] = {
            "update_commands": 0,
            "update_statements": 0,
            "user_writes": 0,
            "other": 0,
            "documents_read": 0,
        }
        self._kinds: dict[int, str] = {}  # request id -> kind, until its reply
        self._reads: set[int] = set()  # request ids of reads of the cache collection

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("find", "getMore"):
            collection = event.command.get("find" if name == "find" else "collection")
            if collection == self.cache_collection:
                self._reads.add(event.request_id)
            return
        if name != "update":
            return
        updates: list[Any] = list(event.command.get("updates") or [])
        self.counts["update_commands"] += 1
        self.counts["update_statements"] += len(updates)
        writes = any(CHECKED_AT in (u.get("u") or {}).get("$set", {}) for u in updates)
        self._kinds[event.request_id] = "user_writes" if writes else "other"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._reads:
            self._reads.discard(event.request_id)
            cursor = event.reply.get("cursor") or {}
            batch = cursor.get("firstBatch", cursor.get("nextBatch")) or []
            self.counts["documents_read"] += len(batch)
            self.save()
            return
        kind = self._kinds.pop(event.request_id, None)
        if kind is None:
            return
        self.counts[kind] += int(event.reply.get("nModified", 0))
        self.save()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._kinds.pop(event.request_id, None)
        self._reads.discard(event.request_id)

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
    cache = Settings.from_env(os.environ).collection_cache
    monitoring.register(RewriteCounter(Path(path) if path else None, cache))
    sys.argv = ["consumer", *sys.argv[1:]]
    runpy.run_module("consumer", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
