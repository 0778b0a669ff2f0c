"""What a full sweep records in the documents it changes, so that, resumed, it still lists
every change it made (issue 14, item 3).

A resumable full sweep checkpoints every N users. A user it wrote after its last
checkpoint and before an interruption is read again on resume with nothing left to
change; re-evaluation alone would leave its transition out of the sweep's check-log (a
false audit log). So a full sweep's write that makes transitions also sets, in the same
single-document update, ``pass_status_sweep_log``: for each of the last
:data:`SWEEPS_KEPT` full sweeps that changed the document, its id and the transitions it
made, ``[{"sweep": id, "invalid_list": [{"pass_uuid", "status_log"}, ...]}, ...]``
(oldest first). The change and its record are durable together, or neither is.

When a sweep reads a document that records transitions under its own id, it lists them
in its entry, before any it makes now (:func:`sweep_entry`); a new write merges them into
the record (:func:`recording`), so a sweep stopped twice still lists both. A document
records another sweep's transitions only under that sweep's id: a resumed sweep lists
what it made, never what a concurrent sweep made. The write that sets the record is
conditioned on the record as read, since its value is derived from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumer.domain.checklog import UserLog, user_log

if TYPE_CHECKING:
    from consumer.domain.rules import Transition, UserEvaluation

SWEEP_LOG = "pass_status_sweep_log"
# Records kept per document: the sweep being resumed keeps its record even if a few other
# full sweeps changed the user meanwhile; the field stays small (transitions only).
SWEEPS_KEPT = 4

Logged = tuple[str, str]  # (pass_uuid, status_log), as in a check-log's invalid_list


@dataclass(frozen=True, slots=True)
class SweepMark:
    """The full sweep a write belongs to, and the transitions the document, as read,
    records for that sweep (made by an earlier write of the same sweep)."""

    sweep_id: str
    before: tuple[Logged, ...]


def sweep_mark(read: Mapping[str, Any], sweep_id: str) -> SweepMark:
    for record in _records(read):
        if record.get("sweep") == sweep_id:
            return SweepMark(sweep_id, _logged(record.get("invalid_list")))
    return SweepMark(sweep_id, ())


def recording(
    read: Mapping[str, Any], mark: SweepMark, transitions: Sequence[Transition]
) -> list[Mapping[str, Any]]:
    """The new value of :data:`SWEEP_LOG` after a write of ``mark``'s sweep that makes
    ``transitions``: the other sweeps' records as read (the latest few), then this one's."""
    made = _merged(mark.before, ((t.pass_uuid, t.status_log) for t in transitions))
    others = [r for r in _records(read) if r.get("sweep") != mark.sweep_id]
    own = {
        "sweep": mark.sweep_id,
        "invalid_list": [{"pass_uuid": p, "status_log": s} for p, s in made],
    }
    return [*others[-(SWEEPS_KEPT - 1) :], own]


def sweep_entry(evaluation: UserEvaluation, mark: SweepMark | None) -> UserLog | None:
    """A user's check-log entry in a sweep: the transitions the sweep made earlier (as
    recorded), then those it makes now, each once; the passes skipped now."""
    entry = user_log(evaluation)
    if mark is None or not mark.before:
        return entry
    now = entry.invalid_list if entry is not None else ()
    skipped = entry.skipped_list if entry is not None else ()
    return UserLog(evaluation.user_id, _merged(mark.before, now), skipped)


def _records(read: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = read.get(SWEEP_LOG)
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def _logged(value: object) -> tuple[Logged, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        (i["pass_uuid"], i["status_log"])
        for i in value
        if isinstance(i, Mapping)
        and isinstance(i.get("pass_uuid"), str)
        and isinstance(i.get("status_log"), str)
    )


def _merged(before: Iterable[Logged], now: Iterable[Logged]) -> tuple[Logged, ...]:
    """``before`` then ``now``, each transition once (a pass the refresher reset and the
    sweep expired again is one event: same ``event_id``)."""
    return tuple(dict.fromkeys((*before, *now)))
