"""One unordered bulk of a batch's conditional writes, with each write's own outcome.

Every write carries the bulk's stamp (``WRITE_STAMP``, a fresh token per bulk). The
driver splits the bulk only at the server's message size. When fewer documents matched
than were sent, one read of the bulk's ``_id``s by that stamp tells which did: the others
are conflicts, re-evaluated by the caller one by one. An operation the server refuses
(``writeErrors``: its index and code) fails its user only; the others are applied
(unordered). A document the driver cannot encode fails the whole command before it is
sent: the writes are then sent one by one, so that only that user fails.

(A document written by this bulk and written again by another writer before the read
reads as a conflict: its user is re-read and re-evaluated, which finds the change made
and relays the entries pending in its outbox; nothing is lost or written twice.)
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

from consumer.domain.user_update import WRITE_STAMP, UserUpdate, write_change
from consumer.errors import DocumentRejectedError

Write = tuple[Mapping[str, Any], UserUpdate]
Operation = Callable[[str], AbstractContextManager[None]]
WriteAlone = Callable[[Mapping[str, Any], UserUpdate, datetime], Awaitable[bool]]
ErrorOf = Callable[[str, int | None, Exception], Exception]


async def write_users(
    cache: AsyncCollection[dict[str, Any]],
    op: Operation,
    writes: Sequence[Write],
    now: datetime,
    write_alone: WriteAlone,
    error_of: ErrorOf,
) -> list[bool | Exception]:
    """Per write: True (written), False (conflict) or the error of that user alone.
    ``op`` times and translates the commands' failures (the store's ``_op``);
    ``error_of`` turns one refused operation into its user's error."""
    if not writes:
        return []
    stamp = secrets.token_hex(8)
    changes = [write_change(read, update, now, stamp) for read, update in writes]
    ops = [UpdateOne({"_id": c.doc_id, **c.condition}, c.change) for c in changes]
    outcomes: list[bool | Exception] = [True] * len(ops)
    try:
        with op("write_users"):
            try:
                matched = (await cache.bulk_write(ops, ordered=False)).matched_count
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if exc.details.get("writeConcernErrors") or not errors:
                    raise
                for error in errors:
                    index = int(error["index"])
                    failed = WriteError(str(error.get("errmsg", "")), error.get("code"), error)
                    outcomes[index] = error_of("write_users", writes[index][1].user_id, failed)
                matched = int(exc.details.get("nMatched", 0))
    except DocumentRejectedError:  # not encodable: find the one at fault
        return [await _alone(write_alone, read, update, now) for read, update in writes]
    sent = [i for i, o in enumerate(outcomes) if o is True]
    if matched < len(sent):
        with op("write_users"):
            query = {"_id": {"$in": [changes[i].doc_id for i in sent]}, WRITE_STAMP: stamp}
            written = {_hashable(d["_id"]) async for d in cache.find(query, {"_id": 1})}
        for i in sent:
            outcomes[i] = _hashable(changes[i].doc_id) in written
    return outcomes


async def _alone(
    write_alone: WriteAlone, read: Mapping[str, Any], update: UserUpdate, now: datetime
) -> bool | Exception:
    try:
        return await write_alone(read, update, now)
    except DocumentRejectedError as exc:
        return exc


def _hashable(doc_id: Any) -> Any:
    """A document ``_id`` as a set member (an embedded-document ``_id`` by its items)."""
    return tuple(sorted(doc_id.items())) if isinstance(doc_id, dict) else doc_id
