"""Which users of a resumable full sweep are done, in the order they were read.

Users are evaluated concurrently, so they finish out of order; a checkpoint may only
claim the users up to the first one still running (the "done prefix"). The entries of
users past it wait here until the prefix reaches them, so that a resumed sweep, which
starts after the checkpoint's last user, never reports a user twice. Memory: the users
in flight (bounded by the sweep's concurrency) and the entries since the last checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.adapters.mongo_sweeps import SweepProgress
    from consumer.offline.logspill import EncodedEntry


class SweepProgressTracker:
    def __init__(self, progress: SweepProgress | None, every: int) -> None:
        # Where reading (re)starts, and the last user of the done prefix.
        self.after: Any = None if progress is None else progress.last_user_id
        self.resume_after: Any = self.after
        self.read_all = progress is not None and progress.read_all
        self._seq = 0 if progress is None else progress.seq
        self._every = every
        self._next = 0
        self._prefix = 0  # the first index not yet in the done prefix
        self._user_ids: dict[int, Any] = {}
        self._done: dict[int, EncodedEntry | None] = {}
        self._entries: list[EncodedEntry] = []
        self._since = 0

    def started(self, user_id: Any) -> int:
        """Number the next user read."""
        index = self._next
        self._next += 1
        self._user_ids[index] = user_id
        return index

    def finished(self, index: int, entry: EncodedEntry | None) -> None:
        self._done[index] = entry
        while self._prefix in self._done:
            done = self._done.pop(self._prefix)
            user_id = self._user_ids.pop(self._prefix)
            if done is not None:
                self._entries.append(done)
            # Documents without a numeric user_id are read last, apart: they never move
            # the point where reading users in user_id order resumes.
            if isinstance(user_id, int | float) and not isinstance(user_id, bool):
                self.resume_after = user_id
            self._prefix += 1
            self._since += 1

    def checkpoint_due(self) -> bool:
        return self._since >= self._every

    def take(self) -> list[EncodedEntry]:
        """The entries of the done prefix since the last call."""
        entries, self._entries = self._entries, []
        self._since = 0
        return entries

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq
