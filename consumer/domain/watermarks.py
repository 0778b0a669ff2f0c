"""Which relays have published: relay keys, and each relay source's watermark.

A write that appends outbox entries stamps the document with the key of the relay that
will publish its whole outbox (``<source>/<seq>``, :data:`consumer.domain.outbox.OUTBOX_RELAY`):
the *source* is one running process (a fresh random id at each start), the *seq* one relay
of it (a ticket-used batch, a chunk of a sweep). After the broker acknowledged that relay,
nothing is written to the documents: the source records, in one small document of
``pass_status_relays`` written about once a second, its :class:`Watermark`: every seq up
to ``through`` except those listed ``unsettled`` (in flight, or failed) is published.

So "published" is known without rewriting a document, and only ever grows: a copy of a
watermark that is out of date says published of fewer keys, never of more (a seq leaves
``unsettled`` only once published, and ``through`` only rises). A key whose source is not
known (not loaded yet) reads as not published. Both mistakes cost a duplicate publication
(same ``event_id``), never a loss.

Keys sort by source, then by seq (12 digits): the entries a source has not yet published
are one indexed range above its ``through`` plus its ``unsettled`` keys
(:func:`unpublished_filter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SEQ_DIGITS = 12
# "/" sorts just below "0": every key of a source lies below ``source + "0"``.
_SEPARATOR = "/"
_ABOVE_SOURCE = "0"


@dataclass(frozen=True, slots=True)
class Watermark:
    """What one source has published: every seq up to ``through`` but ``unsettled``."""

    through: int = 0
    unsettled: frozenset[int] = frozenset()

    def published(self, seq: int) -> bool:
        return seq <= self.through and seq not in self.unsettled


def relay_key(source: str, seq: int) -> str:
    """The key stamped on a document by relay ``seq`` of ``source``."""
    return f"{source}{_SEPARATOR}{seq:0{_SEQ_DIGITS}d}"


def parse_relay_key(value: object) -> tuple[str, int] | None:
    """``(source, seq)`` of a stored key, or None for anything else (absent, null, junk)."""
    if not isinstance(value, str):
        return None
    source, sep, seq = value.rpartition(_SEPARATOR)
    if not sep or not source or len(seq) != _SEQ_DIGITS or not seq.isdigit():
        return None
    return source, int(seq)


def key_published(value: object, watermarks: Mapping[str, Watermark]) -> bool:
    """Whether the relay named by a document's key has published its outbox."""
    parsed = parse_relay_key(value)
    if parsed is None:
        return False
    source, seq = parsed
    watermark = watermarks.get(source)
    return watermark is not None and watermark.published(seq)


def unpublished_filter(field: str, source: str, watermark: Watermark) -> dict[str, Any]:
    """A query for the documents whose key ``field`` names a relay of ``source`` that has
    not published (according to ``watermark``): one index range and an ``$in``."""
    above = {field: {"$gt": relay_key(source, watermark.through), "$lt": source + _ABOVE_SOURCE}}
    if not watermark.unsettled:
        return above
    listed = {field: {"$in": [relay_key(source, s) for s in sorted(watermark.unsettled)]}}
    return {"$or": [above, listed]}
