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
times is replayed once.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from consumer import schemas
from consumer.adapters.kafka import Headers, OutRecord
from consumer.domain.times import parse_instant
from consumer.errors import NotJsonError, SchemaViolationError

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


@dataclass(slots=True)
class Chosen:
    letters: list[DeadLetter] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "topic/partition/offset: why"


def choose(records: Iterable[tuple[str, int, int, bytes | None]], selection: Selection) -> Chosen:
    """The dead letters matching ``selection``, oldest first, one per source record (the
    latest dead letter of a record dead-lettered again after a replay wins)."""
    chosen = Chosen()
    by_source: dict[tuple[str, int, int], DeadLetter] = {}
    for topic, partition, offset, value in records:
        try:
            letter = parse_dead_letter(value, topic, partition, offset)
        except (NotJsonError, SchemaViolationError) as exc:
            chosen.unreadable.append(f"{topic}/{partition}/{offset}: {exc}")
            continue
        if selection.matches(letter):
            source = (letter.source_topic, letter.source_partition, letter.source_offset)
            by_source[source] = letter
    letters = sorted(by_source.values(), key=lambda d: (d.failed_at, d.partition, d.offset))
    chosen.letters = letters[: selection.limit] if selection.limit is not None else letters
    return chosen


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


class DeadLetterSource(Protocol):
    """Every record of the dead-letter topic up to its end when asked."""

    async def read_all(self, topic: str) -> list[tuple[str, int, int, bytes | None]]: ...


class RecordPublisher(Protocol):
    async def publish(self, records: Sequence[OutRecord]) -> None: ...


async def run(
    source: DeadLetterSource,
    publisher: RecordPublisher | None,
    dead_letter_topic: str,
    selection: Selection,
    *,
    replay: bool,
    dry_run: bool,
) -> tuple[Chosen, list[dict[str, Any]]]:
    """List (or replay) the chosen dead letters; returns them and one output line each.
    A replay publishes none of the cut ones: their lines say ``refused`` and why."""
    chosen = choose(await source.read_all(dead_letter_topic), selection)
    whole = [d for d in chosen.letters if not d.truncated]
    if replay and not dry_run:
        if publisher is None:
            raise ValueError("replaying needs a publisher")
        await publisher.publish([replay_record(d) for d in whole])
    action = "listed" if not replay else ("would_replay" if dry_run else "replayed")
    lines = [
        {"action": "refused", "refused": d.refusal(), **d.summary()}
        if replay and d.truncated
        else {"action": action, **d.summary()}
        for d in chosen.letters
    ]
    return chosen, lines
