"""Small pure parts of the shell: tick fan-out, back-off, interval summaries, dead letters."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
from consumer import schemas
from consumer.adapters.metrics import Metrics
from consumer.app import tick_events
from consumer.domain.checklog import UserLog
from consumer.errors import UnknownPassError
from consumer.offline.logspill import SortedLogSpill, decode, merge_adjacent
from consumer.service.backoff import Backoff
from consumer.service.checklog import IntervalSummary
from consumer.service.deadletter import InputRecord, dead_letter
from consumer.service.health import Health, watch_event_loop
from prometheus_client import CollectorRegistry

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def test_due_ticks_fan_out_one_per_shard_keyed_by_shard() -> None:
    events = tick_events("due", None, True, 4, NOW)
    assert [key for key, _ in events] == [b"0", b"1", b"2", b"3"]
    assert {body["shards"] for _, body in events} == {4}
    assert len({body["event_id"] for _, body in events}) == 4
    validate = schemas.validator(schemas.TICK)
    for _, body in events:
        validate(dict(body))


def test_full_and_single_user_ticks_are_not_sharded() -> None:
    [(key, body)] = tick_events("full", 42, False, 4, NOW)
    assert key == b"42"
    assert (body["mode"], body["user_id"], body["apply"]) == ("full", 42, False)
    assert "shard" not in body


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_interval_entries_merge_per_user() -> None:
    summary = IntervalSummary()
    summary.add(UserLog(9, (("p1", "USABLE -> USING"),), ()))
    summary.add(UserLog(3, (("p2", "USING -> EXPIRED"),), ((None, "passes is not a list"),)))
    summary.add(UserLog(9, (("p1", "USING -> EXPIRED"),), ((None, "r"),)))
    summary.add(UserLog(9, (("p4", "USING -> EXPIRED"),), ((None, "r"),)))
    summary.add(UserLog(4, (), (("p3", "unknown status 'X'"),)))  # nothing changed: not kept
    summary.add(None)
    assert len(summary) == 4
    with SortedLogSpill(run_size=2) as spill:  # spilled to runs: merged across them too
        for log in (UserLog(9, (("p1", "USABLE -> USING"),), ()), *_later_logs()):
            spill.add(log)
        merged = [decode(entry) for entry in merge_adjacent(spill.entries())]
    assert [log.user_id for log in merged] == [3, 9]
    assert merged[1] == UserLog(
        9,
        (("p1", "USABLE -> USING"), ("p1", "USING -> EXPIRED"), ("p4", "USING -> EXPIRED")),
        ((None, "r"),),
    )


def _later_logs() -> list[UserLog]:
    return [
        UserLog(3, (("p2", "USING -> EXPIRED"),), ((None, "passes is not a list"),)),
        UserLog(9, (("p1", "USING -> EXPIRED"),), ((None, "r"),)),
        UserLog(9, (("p4", "USING -> EXPIRED"),), ((None, "r"),)),
    ]


def test_dead_letter_keeps_raw_bytes_and_validates() -> None:
    record = InputRecord("in", 2, 17, b"5", b"\x00\xffraw", 1700000000000)
    out = dead_letter(record, UnknownPassError("no pass 'x'"), NOW, "group", "dlq")
    body = orjson.loads(out.value)
    schemas.validator(schemas.DEAD_LETTER)(body)
    assert (out.topic, out.key) == ("dlq", b"5")
    assert body["value_base64"] == "AP9yYXc="
    assert (body["reason"], body["source_partition"], body["source_offset"]) == (
        "unknown_pass",
        2,
        17,
    )


def test_the_event_loop_lag_metric_records_a_blocked_loop() -> None:
    metrics = Metrics(CollectorRegistry())

    async def block_once() -> None:
        watcher = asyncio.create_task(
            watch_event_loop(Health(), metrics.event_loop_lag.observe, interval=0.01)
        )
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - the point: a step that blocks the loop
        await asyncio.sleep(0.05)
        watcher.cancel()

    asyncio.run(block_once())
    [family] = list(metrics.event_loop_lag.collect())
    buckets = {s.labels.get("le"): s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.25"] < buckets["+Inf"]  # one observation above 250 ms
