"""Which relays have published: relay keys, and each relay source's watermark.

A write that appends outbox entries stamps the document with the key of the relay that
will publish its whole outbox (:data:`consumer.domain.outbox.OUTBOX_RELAY`): an integer
``source * 2**32 + seq``, where the *source* is one running process (a number allotted
when it registers, never reused) and the *seq* one relay of it (a ticket-used batch, a
group of a sweep). After the broker acknowledged that relay, nothing is written to the
documents: the source records, in one small document of ``pass_status_relays`` written
every few seconds, its :class:`Watermark`: every seq up to ``through`` except those
listed ``unsettled`` (in flight, or failed) is published.

So "published" is known without rewriting a document, and only ever grows: a copy of a
watermark that is out of date says published of fewer keys, never of more (a seq leaves
``unsettled`` only once published, and ``through`` only rises). A key whose source is not
known (not loaded yet) reads as not published. Both mistakes cost a duplicate publication
(same ``event_id``), never a loss.

Keys sort by source, then by seq, and are integers below 2**53 (exact as a double too):
the entries a source has not published are one indexed numeric range above its
``through`` plus its ``unsettled`` keys (:func:`unpublished_filter`), the shapes the local
store pushes down to its indexes as MongoDB does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SEQ_BITS = 32
MAX_SEQ = (1 << SEQ_BITS) - 1
MAX_SOURCE = (1 << (53 - SEQ_BITS)) - 1


@dataclass(frozen=True, slots=True)
class Watermark:
    """What one source has published: every seq up to ``through`` but ``unsettled``."""

    through: int = 0
    unsettled: frozenset[int] = frozenset()

    def published(self, seq: int) -> bool:
        return seq <= self.through and seq not in self.unsettled


def relay_key(source: int, seq: int) -> int:
    """The key stamped on a document by relay ``seq`` of ``source``."""
    return (source << SEQ_BITS) | seq


def parse_relay_key(value: object) -> tuple[int, int] | None:
    """``(source, seq)`` of a stored key, or None for anything else (absent, null, junk)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    source, seq = value >> SEQ_BITS, value & MAX_SEQ
    if not 1 <= source <= MAX_SOURCE or seq == 0:
        return None
    return source, seq


def key_published(value: object, watermarks: Mapping[int, Watermark]) -> bool:
    """Whether the relay named by a document's key has published its outbox."""
    parsed = parse_relay_key(value)
    if parsed is None:
        return False
    source, seq = parsed
    watermark = watermarks.get(source)
    return watermark is not None and watermark.published(seq)


def unpublished_filter(field: str, source: int, watermark: Watermark) -> dict[str, Any]:
    """A query for the documents whose key ``field`` names a relay of ``source`` that has
    not published (according to ``watermark``): one index range and an ``$in``."""
    above = {field: {"$gt": relay_key(source, watermark.through), "$lt": relay_key(source + 1, 0)}}
    if not watermark.unsettled:
        return above
    listed = {field: {"$in": [relay_key(source, s) for s in sorted(watermark.unsettled)]}}
    return {"$or": [above, listed]}
