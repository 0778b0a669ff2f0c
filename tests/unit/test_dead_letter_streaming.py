"""``dead-letters list|replay`` streams (issue 19): it read the whole topic into memory and
printed at the end. Now each batch is chosen, published and printed before the next is
read, so memory holds one batch whatever the topic's size; a refused publish stops the
replay with a one-line error saying how many were replayed before it."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from consumer.adapters.kafka import OutRecord, TopicReader
from consumer.errors import (
    BrokerUnavailableError,
    PublishRejectedError,
    RecordRejectedError,
    ReplayRefusedError,
)
from consumer.replay import Record, Selection, TopicCheckingPublisher, run
from consumer.service.deadletter import InputRecord, dead_letter
from consumer.settings import Settings

from tests.unit.fakes import FakeService

BATCH = 100
DEAD = FakeService.DEAD_LETTER_TOPIC


def a_letter(offset: int, value_bytes: int = 200, source_offset: int | None = None) -> Record:
    record = InputRecord(
        "ticket-used",
        0,
        offset if source_offset is None else source_offset,
        str(offset).encode(),
        b"x" * value_bytes,
        0,
    )
    error = type("E", (Exception,), {})("boom")
    out = dead_letter(record, error, datetime(2026, 3, 1, tzinfo=UTC), "g", DEAD)
    return (DEAD, 0, offset, bytes(memoryview(out.value)))  # orjson over-allocates


class StreamingSource:
    """``count`` dead letters in batches of ``BATCH``; records how many letters were handed
    out and not yet printed each time the next batch was asked for."""

    def __init__(self, count: int, printed: list[dict[str, Any]], value_bytes: int = 200) -> None:
        self.count = count
        self.printed = printed
        self.value_bytes = value_bytes
        self.unprinted_when_asked: list[int] = []
        self.handed_out = 0

    async def batches(self, topic: str) -> AsyncGenerator[Sequence[Record], None]:
        assert topic == DEAD
        for start in range(0, self.count, BATCH):
            self.unprinted_when_asked.append(self.handed_out - len(self.printed))
            batch = [
                a_letter(o, self.value_bytes) for o in range(start, min(start + BATCH, self.count))
            ]
            self.handed_out += len(batch)
            yield batch


class Published:
    def __init__(
        self, refuse_after: int | None = None, error: type[Exception] = RecordRejectedError
    ) -> None:
        self.records: list[OutRecord] = []
        self.refuse_after = refuse_after
        self.error = error

    async def publish(self, records: Sequence[OutRecord]) -> None:
        if self.refuse_after is not None and len(self.records) + len(records) > self.refuse_after:
            raise self.error("Kafka refused a record: MessageSizeTooLargeError")
        self.records.extend(records)


async def test_replay_of_many_letters_never_holds_more_than_a_batch() -> None:
    printed: list[dict[str, Any]] = []
    source = StreamingSource(5_000, printed)
    publisher = Published()

    outcome = await run(
        source, publisher, DEAD, Selection(), replay=True, dry_run=False, emit=printed.append
    )

    assert outcome.chosen == 5_000
    assert len(publisher.records) == 5_000
    assert [line["action"] for line in printed[:1]] == ["replayed"]
    # Every batch was published and printed before the next one was read.
    assert max(source.unprinted_when_asked) == 0
    assert [r.value for r in publisher.records[:2]] == [b"x" * 200, b"x" * 200]


async def _peak_listing(count: int, value_bytes: int) -> int:
    lines = 0

    def emit(_line: dict[str, Any]) -> None:
        nonlocal lines
        lines += 1

    source = StreamingSource(count, [], value_bytes=value_bytes)
    tracemalloc.start()
    try:
        await run(source, None, DEAD, Selection(), replay=False, dry_run=False, emit=emit)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == count
    return peak


async def test_listing_a_large_topic_takes_memory_of_a_batch_not_of_the_topic() -> None:
    size = 10_000  # a batch holds 1 MB of values; 2,000 letters hold 20 MB
    small, large = await _peak_listing(200, size), await _peak_listing(2_000, size)

    assert large < 1.5 * small, (small, large)  # ten times the letters, the same memory
    assert large < 2_000 * size / 2, large


async def test_a_refused_publish_stops_the_replay_saying_how_many_were_replayed() -> None:
    printed: list[dict[str, Any]] = []
    source = StreamingSource(1_000, printed)
    publisher = Published(refuse_after=250)

    with pytest.raises(ReplayRefusedError) as stopped:
        await run(
            source, publisher, DEAD, Selection(), replay=True, dry_run=False, emit=printed.append
        )

    assert stopped.value.replayed == 200  # two whole batches; the third was refused
    assert len(printed) == 200  # lines only for letters acknowledged
    message = str(stopped.value)
    assert message.startswith("replay stopped after 200 replayed")
    assert "MessageSizeTooLargeError" in message
    assert "\n" not in message


async def test_a_missing_source_topic_is_a_refusal_not_a_wait() -> None:
    asked: list[int] = []

    async def topics() -> set[str]:
        asked.append(1)
        return {"other"}

    checking = TopicCheckingPublisher(Published(), topics)
    with pytest.raises(PublishRejectedError, match="source topic ticket-used does not exist"):
        await checking.publish([OutRecord("ticket-used", None, b"{}")])
    await checking.publish([OutRecord("other", None, b"{}")])
    await checking.publish([OutRecord("other", None, b"{}")])
    assert len(asked) == 1  # a topic seen is not asked about again
    with pytest.raises(PublishRejectedError, match="source topic third does not exist"):
        await checking.publish([OutRecord("third", None, b"{}")])
    assert len(asked) == 2  # a topic not seen yet is


async def test_limit_stops_reading_and_a_redelivered_duplicate_is_replayed_once() -> None:
    letters = [a_letter(0), a_letter(1, source_offset=0), a_letter(2), a_letter(3)]

    class Source:
        batches_read = 0

        async def batches(self, _topic: str) -> AsyncGenerator[Sequence[Record], None]:
            for letter in letters:
                Source.batches_read += 1
                yield [letter]

    printed: list[dict[str, Any]] = []
    await run(
        Source(), None, DEAD, Selection(limit=2), replay=True, dry_run=True, emit=printed.append
    )

    assert [(line["action"], line["source_offset"]) for line in printed] == [
        ("would_replay", 0),
        ("would_replay", 2),
    ]
    assert Source.batches_read == 3  # nothing read past the limit


async def test_unreadable_letters_are_reported_and_skipped() -> None:
    problems: list[str] = []

    class Source:
        async def batches(self, _topic: str) -> AsyncGenerator[Sequence[Record], None]:
            yield [(DEAD, 1, 7, b"not json"), a_letter(8)]

    printed: list[dict[str, Any]] = []
    outcome = await run(
        Source(),
        None,
        DEAD,
        Selection(),
        replay=False,
        dry_run=False,
        emit=printed.append,
        unreadable=problems.append,
    )
    assert (outcome.chosen, outcome.unreadable) == (1, 1)
    assert problems[0].startswith(f"{DEAD}/1/7: ")
    assert orjson.dumps(printed[0]["dead_letter"]) == orjson.dumps(f"{DEAD}/0/8")


class _PartitionConsumer:
    """The part of ``AIOKafkaConsumer`` a partition read uses: ``records`` offsets handed
    out one per fetch, each after an empty fetch (the next fetch in flight), then empty
    fetches (a broker away, say)."""

    def __init__(self, records: int) -> None:
        self.records = records
        self._position = 0
        self._fetches = 0

    async def getmany(self, tp: Any, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:  # noqa: ARG002 - the port
        await asyncio.sleep(0.01)
        self._fetches += 1
        if self._position >= self.records or self._fetches % 2:
            return {}
        message = SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=self._position)
        message.value = b"{}"
        self._position += 1
        return {tp: [message]}

    async def position(self, _tp: Any) -> int:
        return self._position


async def test_a_read_has_no_time_cap_only_an_idle_limit() -> None:
    reader = TopicReader(Settings(), batch_records=1, idle_seconds=0.2)
    tp = TopicPartition(DEAD, 0)
    read = []
    started = time.monotonic()
    # The caller takes longer with each batch than the idle limit, 1.2 s in all: that is
    # neither idleness nor a reason to stop (the old reader stopped at a fixed 60 s).
    async for batch in reader._partition(_PartitionConsumer(4), tp, end=4):
        read += batch
        await asyncio.sleep(0.3)
    assert [offset for _topic, _partition, offset, _value in read] == [0, 1, 2, 3]
    assert time.monotonic() - started > 1.0


async def test_a_partition_without_progress_stops_the_read_after_the_idle_limit() -> None:
    reader = TopicReader(Settings(), batch_records=1, idle_seconds=0.2)
    tp = TopicPartition(DEAD, 0)
    with pytest.raises(BrokerUnavailableError, match=r"made no progress for 0\.2 s at offset 1"):
        # One record, then nothing more although the end offset lies further.
        async for _batch in reader._partition(_PartitionConsumer(1), tp, end=3):
            pass
