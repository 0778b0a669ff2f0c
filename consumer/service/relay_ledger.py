"""This process's relays, and what it knows other processes have published.

Each relay (a ticket-used batch, a chunk of a sweep) takes a :class:`RelayTicket`: a seq
of this process's source, whose key its writes stamp on the documents they append to
(:mod:`consumer.domain.watermarks`). The ticket is closed once the relay is over: published
(the broker acknowledged every entry it stamped), or not (a fault: its entries stay
unpublished until a later relay or the orphan relay publishes them). The ledger's
:meth:`RelayLedger.watermark` is what the source persists; :meth:`RelayLedger.published`
answers for any key, from this process's own exact state or the last watermarks read of
the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer.domain.outbox import OUTBOX, OUTBOX_RELAY, Relaying
from consumer.domain.watermarks import MAX_SEQ, Watermark, parse_relay_key, relay_key

# A failed relay's seq stays unsettled at least this long, and until no document holds
# its key unpublished: a write sent with that key whose answer never came could still
# land (and must then be found by the orphan relay).
FAILED_SEQ_HOLD_SECONDS = 600.0


@dataclass(slots=True)
class RelayTicket:
    """One relay of this process: its seq and key; ``stamped`` once a write that appends
    with this key was sent (it may have landed, even if its answer never came)."""

    seq: int
    key: int
    stamped: bool = False


class RelayLedger:
    """``source``: this process's number, allotted when it registers (:meth:`start`)."""

    def __init__(self, source: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self._last = 0  # the last seq allotted
        self._open: set[int] = set()
        self._failed: dict[int, float] = {}  # seq -> when it failed (clock)
        self._others: dict[int, Watermark] = {}

    @property
    def started(self) -> bool:
        return self.source > 0

    def start(self, source: int) -> None:
        self.source = source

    def open(self) -> RelayTicket:
        if not self.started:
            raise RuntimeError("a relay ticket before this source was registered")
        if self._last >= MAX_SEQ:
            # 4 billion relays in one process's life; restarting gives a new source.
            raise RuntimeError(f"relay source {self.source} has used every seq")
        self._last += 1
        self._open.add(self._last)
        return RelayTicket(self._last, relay_key(self.source, self._last))

    def close(self, ticket: RelayTicket, *, published: bool) -> None:
        """End ``ticket``'s relay. Not published and stamped: its documents may hold
        unpublished entries under its key, so the seq stays unsettled."""
        self._open.discard(ticket.seq)
        if not published and ticket.stamped:
            self._failed[ticket.seq] = self.clock()

    def watermark(self) -> Watermark:
        """This source's watermark, as it must be persisted."""
        return Watermark(self._last, frozenset(self._open | self._failed.keys()))

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing failed: every key of this source is published."""
        return not self._open and not self._failed

    def published(self, key: object) -> bool:
        parsed = parse_relay_key(key)
        if parsed is None:
            return False
        source, seq = parsed
        if source == self.source:  # per user written: no allocation
            return seq <= self._last and seq not in self._open and seq not in self._failed
        other = self._others.get(source)
        return other is not None and other.published(seq)

    def relaying(self, ticket: RelayTicket, read: Mapping[str, Any]) -> Relaying:
        """How a write of ``read`` under ``ticket`` treats the outbox it read."""
        known = not read.get(OUTBOX) or self.published(read.get(OUTBOX_RELAY))
        return Relaying(ticket.key, known)

    def learn(self, watermarks: Mapping[int, Watermark]) -> None:
        """Take the persisted watermarks of other sources (they only ever rise)."""
        for source, mark in watermarks.items():
            if source != self.source:
                self._others[source] = mark

    def watermarks(self) -> dict[int, Watermark]:
        """Every source's watermark known here, this one's exact."""
        return {**self._others, self.source: self.watermark()}

    def retire_failed(self, still_unpublished: frozenset[int]) -> None:
        """Settle the failed seqs held long enough whose keys no document holds
        unpublished any more (the orphan relay, or a later write, published them)."""
        held = self.clock() - FAILED_SEQ_HOLD_SECONDS
        for seq, failed_at in list(self._failed.items()):
            if failed_at <= held and relay_key(self.source, seq) not in still_unpublished:
                del self._failed[seq]
