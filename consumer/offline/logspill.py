"""Check-log entries, sorted by ``user_id``, in memory that does not grow with the input.

The check log lists users sorted by ``user_id``, but an export is in ``_id`` order. Entries
are buffered; every ``run_size`` entries the buffer is sorted and written to a temporary
"run" file, and reading merges the runs (``heapq.merge``: an external merge sort). Small
checks never touch the disk. Sorting is stable: entries with the same ``user_id`` keep
their input order.

Each entry is kept encoded, with its BSON size and its part size (the larger of BSON and
JSON), so that planning the split into parts and writing the JSON never decode it again.
Used by the offline check and by the service's check-logs (full ticks, online ``check``,
interval summaries), which therefore never hold every user's entry in memory. With
``max_entry_bytes``, an entry too large for a part alone is cut first (``fit_user_log``).
"""

from __future__ import annotations

import heapq
import tempfile
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Self

from consumer.domain.checklog import (
    UserLog,
    fit_user_log,
    log_entry,
    user_log_bson_size,
    user_log_size,
)
from consumer.offline import extjson

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType

_by_user = attrgetter("user_id")

DEFAULT_RUN_SIZE = 20_000  # entries held in memory at most (a few MiB)
# Runs merged at once; beyond this they are first merged into one (open-file limits).
MAX_RUNS = 128


@dataclass(frozen=True, slots=True)
class EncodedEntry:
    """One user's log entry: its JSON, its size as a BSON document, and the bytes it takes
    in a check-log part (the larger of its BSON and JSON sizes)."""

    user_id: int
    bson_size: int
    json: bytes
    size: int


class SortedLogSpill:
    """Collects :class:`UserLog` entries; :meth:`entries` yields them sorted (re-iterable)."""

    def __init__(
        self,
        run_size: int = DEFAULT_RUN_SIZE,
        max_runs: int = MAX_RUNS,
        max_entry_bytes: int | None = None,
    ) -> None:
        self._run_size = run_size
        self._max_entry = max_entry_bytes
        self._max_runs = max_runs
        self._buffer: list[EncodedEntry] = []
        self._runs: list[Path] = []
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._run_number = 0
        self.count = 0

    def add(self, log: UserLog) -> None:
        if self._max_entry is not None:
            log = fit_user_log(log, self._max_entry)
        self.add_encoded(encode(log))

    def _spill(self) -> None:
        if len(self._runs) >= self._max_runs:
            merged = self._write_run(heapq.merge(*map(_read_run, self._runs), key=_by_user))
            for path in self._runs:
                path.unlink()
            self._runs = [merged]
        self._runs.append(self._write_run(sorted(self._buffer, key=_by_user)))
        self._buffer = []

    def _write_run(self, entries: Iterable[EncodedEntry]) -> Path:
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="pass-status-checklog-")
        self._run_number += 1
        path = Path(self._directory.name) / f"run-{self._run_number:06d}"
        with path.open("wb") as run:
            for entry in entries:
                # orjson never writes a raw newline, so one entry is one line.
                run.write(
                    b"%d %d %d %s\n" % (entry.user_id, entry.bson_size, entry.size, entry.json)
                )
        return path

    def add_encoded(self, entry: EncodedEntry) -> None:
        """Add an entry already encoded (one saved in a sweep's checkpoint, say)."""
        self._buffer.append(entry)
        self.count += 1
        if len(self._buffer) >= self._run_size:
            self._spill()

    def entries(self) -> Iterator[EncodedEntry]:
        """Every entry added so far, sorted by ``user_id``; can be iterated more than once."""
        in_memory = sorted(self._buffer, key=_by_user)
        if not self._runs:
            return iter(in_memory)
        sources = [_read_run(path) for path in self._runs]
        sources.append(iter(in_memory))
        return heapq.merge(*sources, key=_by_user)

    def close(self) -> None:
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
        self._buffer = []
        self._runs = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def encode(log: UserLog) -> EncodedEntry:
    """The encoded entry of ``log``."""
    # orjson over-allocates its result (kilobytes for a short entry): keep an exact copy.
    encoded = bytes(memoryview(extjson.dumps(log_entry(log))))
    return EncodedEntry(log.user_id, user_log_bson_size(log), encoded, user_log_size(log))


def decode(entry: EncodedEntry) -> UserLog:
    """The :class:`UserLog` an entry encodes."""
    body = extjson.loads(entry.json)
    return UserLog(
        entry.user_id,
        tuple((i["pass_uuid"], i["status_log"]) for i in body["invalid_list"]),
        tuple((s["pass_uuid"], s["reason"]) for s in body["skipped_list"]),
    )


def merge_adjacent(entries: Iterable[EncodedEntry]) -> Iterator[EncodedEntry]:
    """One entry per run of equal ``user_id``: the transitions of all, in order, and each
    distinct skip once (a user changed several times within an interval)."""
    run: list[EncodedEntry] = []
    for entry in entries:
        if run and entry.user_id != run[0].user_id:
            yield _merged(run)
            run = []
        run.append(entry)
    if run:
        yield _merged(run)


def _merged(run: list[EncodedEntry]) -> EncodedEntry:
    if len(run) == 1:
        return run[0]
    logs = [decode(entry) for entry in run]
    invalid = tuple(item for log in logs for item in log.invalid_list)
    skipped = tuple(dict.fromkeys(item for log in logs for item in log.skipped_list))
    return encode(UserLog(run[0].user_id, invalid, skipped))


def fitted(entries: Iterable[EncodedEntry], max_entry_bytes: int) -> Iterator[EncodedEntry]:
    """Each entry, cut to ``max_entry_bytes`` (``fit_user_log``) when larger."""
    for entry in entries:
        if entry.size <= max_entry_bytes:
            yield entry
        else:
            yield encode(fit_user_log(decode(entry), max_entry_bytes))


def _read_run(path: Path) -> Iterator[EncodedEntry]:
    with path.open("rb") as run:
        for line in run:
            user_id, bson_size, size, json = line.rstrip(b"\n").split(b" ", 3)
            yield EncodedEntry(int(user_id), int(bson_size), json, int(size))
