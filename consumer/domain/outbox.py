"""The outbox lifecycle: how a status-change event travels from its transition to Kafka.

This module is the one owner of the rules; the store adapter sends what it builds, the
relay (:mod:`consumer.service.outbox`) publishes as it says. Three fields of the user's
cache document hold the outbox:

- ``pass_status_outbox``: the events of the document's last relay, oldest first;
- ``pass_status_outbox_relay``: the key of that relay (an integer naming its source and
  seq, :mod:`consumer.domain.watermarks`), the one that publishes the whole outbox;
  indexed;
- ``pass_status_outbox_since``: a date while entries written by an earlier version wait
  (indexed, found by the orphan relay); new writes leave it null.

An entry's life:

1. **written** by :func:`conditional_write`, in the same single-document update as its
   transition, at the end of the outbox, with the writer's relay key; entries already
   there that the writer does not know to be published are carried ahead of it (the new
   relay publishes them too), entries it knows published are dropped;
2. **relayed**: published by that relay, with every entry carried, head first
   (:func:`relay_after_write`);
3. **recorded published** without touching the document: the relay's source raises its
   watermark (:class:`consumer.domain.watermarks.Watermark`) once the broker acknowledged
   the relay; the entry stays in the document until the document's next write drops it;
4. **re-published**, with the same ``event_id``, by any replica's orphan relay once it has
   waited longer than the orphan age with its key still unpublished (a crash, a failed
   relay), then **cleared** by :func:`clearing_steps`, by exact value;
5. or **rejected**: if Kafka refuses it for what it holds (``RecordRejectedError``: too
   large, invalid), moved whole by :func:`rejecting_steps` to
   ``pass_status_outbox_rejected``, where an operator finds it and can replay it
   (docs/operations.md).

So a status change costs one document write; the watermark is one small write per source
every few seconds, whatever the number of changes.

Invariants (each has a test in ``tests/unit/test_outbox_lifecycle.py``):

- **I1 durable together.** An entry is in the document if and only if its transition
  was written: one update does both, or neither.
- **I2 findable.** A document holding an entry not yet published has the key of a relay
  that has not published: its source is registered before its first write, and its
  watermark says published only after the broker acknowledged that relay, so the entry
  is in the orphan relay's indexed query (legacy entries: ``since`` is set). A write that
  changes the outbox is conditioned on the outbox, the key and ``since`` being exactly as
  read (a concurrent write or clear makes it conflict and re-read).
- **I3 never lost.** An entry leaves the outbox only once published: dropped by a write
  that knows its key published, cleared by exact value after the broker acknowledged it,
  or moved whole to the rejected list (I6); and only that exact outbox (a concurrent
  append is never removed). Knowledge of publication only grows (an out-of-date copy of a
  watermark says published of fewer keys), so a stale copy can only drop less.
- **I4 ordered.** Each relay publishes the outbox as it was at its write (or read), head
  first, so the first publication of each of a pass's events follows the order of its
  transitions; within a process one relay at a time handles a document, and an entry
  already acknowledged there is not published again.
- **I5 same id.** An entry is stored whole and published as stored: a re-publication
  carries the same ``event_id`` (deterministic from user, pass and new status).
- **I6 refused, not stuck.** An entry Kafka refuses for what it holds moves, in one
  update, from the outbox to ``pass_status_outbox_rejected`` exactly as stored (its full
  payload and ``event_id``, for a replay): the user's later entries flow, and no relay
  tries it again. Each is counted and logged.
  Kafka never saw it, so a replay comes after the pass's later events (order I4 cannot
  hold for it); consumers place it by ``effective_at`` and de-duplicate by ``event_id``.
  A refusal of the topic itself (not authorized) moves nothing: all stay queued (I3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.domain.times import parse_instant
from consumer.errors import UnreadableTimeError

OUTBOX = "pass_status_outbox"
OUTBOX_SINCE = "pass_status_outbox_since"
OUTBOX_RELAY = "pass_status_outbox_relay"
OUTBOX_REJECTED = "pass_status_outbox_rejected"

# The one operator a condition may use besides plain equality: the field is missing.
ABSENT: Mapping[str, Any] = {"$exists": False}


@dataclass(frozen=True, slots=True)
class ConditionalChange:
    """``change`` (a MongoDB update document) applied to document ``doc_id`` only while
    it matches ``condition`` (fields mapped to their exact expected value, or
    :data:`ABSENT`; an empty condition always matches)."""

    doc_id: Any
    condition: Mapping[str, Any]
    change: Mapping[str, Any]


def pending_outbox(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Outbox entries of a document as read (left by an earlier write or a crash)."""
    entries = doc.get(OUTBOX)
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("event_id"), str)]


def written_at(doc: Mapping[str, Any]) -> datetime | None:
    """When the outbox's newest entry was written: the legacy marker, or the newest
    entry's ``detected_at`` (its write's instant); None if unreadable."""
    since = doc.get(OUTBOX_SINCE)
    if isinstance(since, datetime):
        return since
    entries = pending_outbox(doc)
    if not entries:
        return None
    try:
        return parse_instant(entries[-1].get("detected_at"))
    except UnreadableTimeError:
        return None


def as_read(read: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """A condition matching ``fields`` exactly as they were in ``read`` (or missing)."""
    return {f: read.get(f, ABSENT) for f in fields}


@dataclass(frozen=True, slots=True)
class Relaying:
    """How a writer stamps what it appends: ``key`` of the relay that publishes it, and
    ``earlier_published``, whether the outbox the document held when read is known to be
    published (its key's watermark says so, or it is empty)."""

    key: int
    earlier_published: bool


def earlier_entries(read: Mapping[str, Any], relaying: Relaying | None) -> list[dict[str, Any]]:
    """The entries of ``read``'s outbox that a write relays: all of them, unless known
    published (I3: only those are dropped)."""
    if relaying is not None and relaying.earlier_published:
        return []
    return pending_outbox(read)


def _kept(read: Mapping[str, Any], relaying: Relaying) -> list[Any]:
    """What a write keeps of ``read``'s outbox, as stored (an item no relay can read is
    kept as it is, not silently dropped): nothing once known published."""
    stored = read.get(OUTBOX)
    return [] if relaying.earlier_published or not isinstance(stored, list) else list(stored)


def conditional_write(
    read: Mapping[str, Any],
    sets: Mapping[str, Any],
    entries: Sequence[Mapping[str, Any]],
    relaying: Relaying | None,
) -> ConditionalChange:
    """The update of a document read as ``read``: ``sets``, an incremented revision, and
    ``entries`` written to its outbox behind the earlier entries not known published,
    stamped with ``relaying.key``.

    It applies only while ``passes`` are as read and, when it changes the outbox, while
    the outbox, its key and the legacy marker are too (I2). A write that appends nothing
    drops an outbox known published (free: the document is written anyway) and otherwise
    leaves the outbox alone. The ``user_id`` as read is in the condition too: on a cluster
    sharded by ``user_id`` the write goes to one shard instead of every shard.
    """
    all_sets = dict(sets)
    change: dict[str, Any] = {"$set": all_sets, "$inc": {REVISION: 1}}
    stored = read.get(OUTBOX)
    if entries:
        if relaying is None:
            raise ValueError("a write that appends outbox entries needs a relay key")
        all_sets[OUTBOX] = [*_kept(read, relaying), *(dict(e) for e in entries)]
        all_sets[OUTBOX_RELAY] = relaying.key
        if read.get(OUTBOX_SINCE) is not None:
            all_sets[OUTBOX_SINCE] = None  # legacy entries carried: this relay publishes them
    elif relaying is not None and relaying.earlier_published and stored:
        all_sets[OUTBOX] = []
    else:
        return ConditionalChange(read["_id"], as_read(read, (USER_ID, "passes")), change)
    condition = as_read(read, (USER_ID, "passes", OUTBOX, OUTBOX_RELAY, OUTBOX_SINCE))
    return ConditionalChange(read["_id"], condition, change)


def relay_after_write(
    read: Mapping[str, Any],
    appended: Sequence[Mapping[str, Any]],
    *,
    written: bool,
    relay_pending: bool,
    relaying: Relaying | None = None,
) -> tuple[dict[str, Any], ...]:
    """The entries a writer relays after its write of ``read``, head first (I4).

    A write that appended entries relays the whole outbox as it wrote it (its condition
    held the outbox as read): the earlier entries it kept, then its own. A writer that
    appended nothing relays the earlier entries not known published only with
    ``relay_pending`` (the ticket-used partition owner, so that a redelivered batch
    publishes what its first attempt left); a sweep leaves them to their relay or to
    the orphan relay, since it has nothing to put after them.
    """
    earlier = tuple(earlier_entries(read, relaying))
    if written and appended:
        return (*earlier, *(dict(e) for e in appended))
    return earlier if relay_pending else ()


def clearing_steps(
    docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
) -> tuple[list[ConditionalChange], list[ConditionalChange], list[ConditionalChange]]:
    """The updates that remove acknowledged ``entries`` from each document's outbox.

    Step 1 empties an outbox holding exactly the acknowledged entries, marker included;
    it is usually all that runs. If any did not match (another write appended entries
    meanwhile), step 2 pulls only the acknowledged entries (``$pullAll`` by exact value),
    and step 3 clears the marker of each outbox that is then empty. Each names the
    entries' ``user_id`` (:func:`owner`).
    """
    emptied = [ConditionalChange(i, {**owner(e), OUTBOX: list(e)}, _EMPTY_OUTBOX) for i, e in docs]
    pulled = [ConditionalChange(i, owner(e), {"$pullAll": {OUTBOX: list(e)}}) for i, e in docs if e]
    unmarked = [ConditionalChange(i, {**owner(e), OUTBOX: []}, _NO_SINCE) for i, e in docs]
    return emptied, pulled, unmarked


def rejecting_steps(
    docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
) -> tuple[list[ConditionalChange], list[ConditionalChange]]:
    """The updates that move entries Kafka refused out of each document's outbox (I6).

    Step 1 moves each entry, while the outbox still holds its ``event_id``, to
    ``pass_status_outbox_rejected`` (``$pullAll`` by exact value and ``$push`` of that
    value, in one update: it is never in neither, and never parked twice); step 2 clears
    the marker of each outbox that is then empty. (``$elemMatch`` or a whole-entry element
    match would state the condition exactly, but FerretDB 1.24 matches neither; a dotted
    path is supported by both servers.)
    """
    moved = [
        ConditionalChange(
            i,
            {**owner([e]), f"{OUTBOX}.event_id": e["event_id"]},
            {"$pullAll": {OUTBOX: [e]}, "$push": {OUTBOX_REJECTED: e}},
        )
        for i, entries in docs
        for e in entries
    ]
    unmarked = [
        ConditionalChange(i, {**owner(entries), OUTBOX: []}, _NO_SINCE)
        for i, entries in docs
        if entries
    ]
    return moved, unmarked


def owner(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{user_id: ...}`` of the document that holds ``entries`` (each event names its
    user), so that an update of that outbox goes to one shard of a cluster sharded by
    ``user_id``; empty without entries (an update by ``_id`` alone is still correct)."""
    user_ids = {e.get(USER_ID) for e in entries}
    if len(user_ids) != 1:
        return {}
    (user_id,) = user_ids
    return {USER_ID: user_id} if isinstance(user_id, int) and not isinstance(user_id, bool) else {}


REVISION = "pass_status_rev"
USER_ID = "user_id"
_EMPTY_OUTBOX: Mapping[str, Any] = {"$set": {OUTBOX: [], OUTBOX_SINCE: None, OUTBOX_RELAY: None}}
_NO_SINCE: Mapping[str, Any] = {"$set": {OUTBOX_SINCE: None, OUTBOX_RELAY: None}}
