"""Dead-letter replay: read the dead-letter topic, choose dead letters, re-drive them.

``python -m consumer dead-letters list|replay`` (docs/operations.md, "Dead-letter replay").
After the data is fixed (a missing user document created, a producer bug fixed), the chosen
dead letters are re-published to their source topic with their original key, value and
headers, plus ``pass-status-replayed-from: <dead-letter topic>/<partition>/<offset>``. The
consumers then apply them like any other record.

A dead letter that was cut to fit (``truncated``: it holds a prefix of the value, or lost
headers) cannot be replayed byte-exact: a replay refuses it, publishes nothing for it, and
says so in its output line; ``list`` shows it as cut.

Replaying is idempotent: a ticket-used event already applied finds its pass already USING
and its ``first_use`` set, so it changes nothing and publishes nothing; status changes keep
their deterministic ``event_id``. Within one run, a source record dead-lettered several
times (its batch redelivered) is replayed once.

The topic is streamed (:func:`run`): one batch in memory at a time, lines printed as their
batch is done, no time limit (the read stops at the end offsets found at the start, or
when no progress is made for the reader's idle timeout).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from consumer import schemas
from consumer.adapters.kafka import Headers, OutRecord
from consumer.domain.times import parse_instant
from consumer.errors import (
    NotJsonError,
    PublishRejectedError,
    ReplayRefusedError,
    SchemaViolationError,
)

REPLAY_HEADER = "pass-status-replayed-from"

# Reason codes earlier versions wrote, read as today's (so ``--reason`` finds both).
LEGACY_REASONS: dict[str, str] = {"message_too_large": "too_large"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as read back: where it is, where it came from, and the raw record."""

    topic: str
    partition: int
    offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    message: str
    failed_at: datetime
    consumer_group: str
    truncated: bool = False
    value_length: int | None = None  # the source value's full length (None: a tombstone)
    value_sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly line for ``list`` (key and value as text when they are UTF-8)."""
        return {
            "dead_letter": f"{self.topic}/{self.partition}/{self.offset}",
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "reason": self.reason,
            "message": self.message,
            "failed_at": self.failed_at.isoformat().replace("+00:00", "Z"),
            "key": _text(self.key),
            "value": _text(self.value),
            "value_length": self._value_length(),
            "truncated": self.truncated,
            "headers": {k: _text(v) for k, v in self.headers},
        }

    def _value_length(self) -> int | None:
        if self.value_length is not None or self.value is None:
            return self.value_length
        return len(self.value)  # a dead letter of an earlier version: always whole

    def refusal(self) -> str:
        """Why a replay refuses this dead letter ("" if it does not)."""
        if not self.truncated:
            return ""
        kept = len(self.value or b"")
        return (
            f"cut dead letter: it keeps {kept} of the value's {self.value_length} bytes "
            f"(sha256 {self.value_sha256}) and the headers that fit, so it cannot be replayed "
            "byte-exact; re-publish the original record from its producer"
        )


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    return data.decode("utf-8", errors="replace")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def parse_dead_letter(
    value: bytes | None, topic: str = "", partition: int = 0, offset: int = 0
) -> DeadLetter:
    """Parse a dead-letter record's value (schemas/dead-letter.v1.json) or raise an
    :class:`~consumer.errors.InputError`."""
    if value is None:
        raise NotJsonError("dead letter has no value")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotJsonError(f"dead letter is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaViolationError("dead-letter.v1: expected a JSON object")
    try:
        schemas.validator(schemas.DEAD_LETTER)(data)
        headers = tuple(
            (h["key"], _unb64(h["value_base64"]) or b"") for h in data.get("headers", [])
        )
        key, raw = _unb64(data["key_base64"]), _unb64(data["value_base64"])
    except (schemas.ValidationFailure, ValueError) as exc:
        raise SchemaViolationError(f"dead-letter.v1: {exc}"[:500]) from None
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        source_topic=data["source_topic"],
        source_partition=data["source_partition"],
        source_offset=data["source_offset"],
        source_timestamp_ms=data.get("source_timestamp_ms"),
        key=key,
        value=raw,
        headers=headers,
        reason=str(LEGACY_REASONS.get(data["reason"], data["reason"])),
        message=data["message"],
        failed_at=parse_instant(data["failed_at"]),
        consumer_group=data["consumer_group"],
        truncated=data.get("truncated", False),
        value_length=data.get("value_length"),
        value_sha256=data.get("value_sha256"),
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to take; every filter that is set must match."""

    reasons: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    since: datetime | None = None  # failed_at >= since
    until: datetime | None = None  # failed_at < until
    source_partition: int | None = None
    min_offset: int | None = None  # source offsets, inclusive
    max_offset: int | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (not self.source_topics or letter.source_topic in self.source_topics)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
            and (self.source_partition is None or letter.source_partition == self.source_partition)
            and (self.min_offset is None or letter.source_offset >= self.min_offset)
            and (self.max_offset is None or letter.source_offset <= self.max_offset)
        )


class CutDeadLetterError(ValueError):
    """A cut dead letter (``truncated``) was to be replayed: it does not hold the record."""


def replay_record(letter: DeadLetter) -> OutRecord:
    """The record a replay publishes: the original key, value and headers (an earlier
    replay mark replaced) plus the replay mark naming this dead letter. A cut dead letter
    has none to publish: :class:`CutDeadLetterError`."""
    if letter.truncated:
        raise CutDeadLetterError(letter.refusal())
    mark = f"{letter.topic}/{letter.partition}/{letter.offset}".encode()
    headers = tuple((k, v) for k, v in letter.headers if k != REPLAY_HEADER)
    return OutRecord(
        topic=letter.source_topic,
        key=letter.key,
        value=letter.value if letter.value is not None else b"",
        headers=(*headers, (REPLAY_HEADER, mark)),
    )


Record = tuple[str, int, int, bytes | None]
"""A dead-letter record as read: topic, partition, offset, value."""


class DeadLetterSource(Protocol):
    """The dead-letter topic's records, from its start up to the end offsets found when
    asked, in batches: one partition after another, each in offset order."""

    def batches(self, topic: str) -> AsyncGenerator[Sequence[Record], None]: ...


class RecordPublisher(Protocol):
    async def publish(self, records: Sequence[OutRecord]) -> None: ...


# Source records remembered to replay each once per run. A record is dead-lettered twice
# when its batch is redelivered (a crash before the commit): the copies lie close together.
DEDUP_WINDOW = 10_000


@dataclass(slots=True)
class Outcome:
    """What a run did: dead letters listed or replayed, and unreadable ones met."""

    chosen: int = 0
    unreadable: int = 0
    refused: int = 0  # cut dead letters a replay did not publish (they lack the record)


async def run(
    source: DeadLetterSource,
    publisher: RecordPublisher | None,
    dead_letter_topic: str,
    selection: Selection,
    *,
    replay: bool,
    dry_run: bool,
    emit: Callable[[dict[str, Any]], None],
    unreadable: Callable[[str], None] = lambda _problem: None,
) -> Outcome:
    """List (or replay) the chosen dead letters, batch by batch: each batch's letters are
    published, then ``emit`` gets one line each, before the next batch is read. Memory holds
    one batch, whatever the topic's size. Letters come one dead-letter partition after
    another, oldest first within each (a user's letters share a partition: they stay in
    order); ``selection.limit`` takes the first N so met.

    A refused publish raises :class:`ReplayRefusedError` saying how many were replayed. A
    replay publishes none of the cut dead letters: their lines say ``refused`` and why, and
    ``Outcome.refused`` counts them."""
    publishing = replay and not dry_run
    if publishing and publisher is None:
        raise ValueError("replaying needs a publisher")
    action = "listed" if not replay else ("would_replay" if dry_run else "replayed")
    outcome = Outcome()
    recent: OrderedDict[tuple[str, int, int], None] = OrderedDict()
    batches = source.batches(dead_letter_topic)
    try:
        async for batch in batches:
            letters = _choose(batch, selection, recent, outcome, unreadable)
            whole = [letter for letter in letters if not letter.truncated]
            if publisher is not None and publishing and whole:
                await _publish(publisher, whole, outcome.chosen - outcome.refused)
            for letter in letters:
                if replay and letter.truncated:
                    outcome.refused += 1
                    emit({"action": "refused", "refused": letter.refusal(), **letter.summary()})
                else:
                    emit({"action": action, **letter.summary()})
            outcome.chosen += len(letters)
            if selection.limit is not None and outcome.chosen >= selection.limit:
                break
    finally:
        await batches.aclose()
    return outcome


def _choose(
    batch: Sequence[Record],
    selection: Selection,
    recent: OrderedDict[tuple[str, int, int], None],
    outcome: Outcome,
    unreadable: Callable[[str], None],
) -> list[DeadLetter]:
    room = None if selection.limit is None else selection.limit - outcome.chosen
    letters: list[DeadLetter] = []
    for topic, partition, offset, value in batch:
        if room is not None and len(letters) >= room:
            break
        try:
            letter = parse_dead_letter(value, topic, partition, offset)
        except (NotJsonError, SchemaViolationError) as exc:
            outcome.unreadable += 1
            unreadable(f"{topic}/{partition}/{offset}: {exc}")
            continue
        if not selection.matches(letter):
            continue
        source = (letter.source_topic, letter.source_partition, letter.source_offset)
        if source in recent:
            continue
        recent[source] = None
        if len(recent) > DEDUP_WINDOW:
            recent.popitem(last=False)
        letters.append(letter)
    return letters


async def _publish(publisher: RecordPublisher, letters: list[DeadLetter], replayed: int) -> None:
    try:
        await publisher.publish([replay_record(letter) for letter in letters])
    except PublishRejectedError as exc:
        more = (
            f" (of the {len(letters)} being published with it, some may have been: replaying"
            " again is harmless)"
            if len(letters) > 1
            else ""
        )
        raise ReplayRefusedError(
            f"replay stopped after {replayed} replayed{more}: {exc}", replayed=replayed
        ) from exc


class TopicCheckingPublisher:
    """Publishes replays only to source topics that exist: Kafka would otherwise wait
    for the missing topic's metadata and time out, which reads as the broker being away.
    ``list_topics`` gives the cluster's topics; it is asked again for a topic not seen."""

    def __init__(
        self, publisher: RecordPublisher, list_topics: Callable[[], Awaitable[set[str]]]
    ) -> None:
        self._publisher = publisher
        self._list_topics = list_topics
        self._known: set[str] = set()

    async def publish(self, records: Sequence[OutRecord]) -> None:
        topics = {record.topic for record in records}
        if not topics <= self._known:
            self._known = await self._list_topics()
        missing = sorted(topics - self._known)
        if missing:
            raise PublishRejectedError(
                f"source topic {', '.join(missing)} does not exist: create it, or leave its"
                " letters out (--source-topic)"
            )
        await self._publisher.publish(records)
