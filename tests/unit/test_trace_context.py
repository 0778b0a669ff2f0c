"""Headers and trace context travel from an input to what it causes: dead letters keep every
header; a ``traceparent`` reaches status changes (through the outbox entry) and check-logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from consumer.adapters.kafka import OutRecord, traceparent_of
from consumer.adapters.metrics import Metrics
from consumer.adapters.store_ports import CheckLogStore, OutboxStore
from consumer.domain.checklog import UserLog
from consumer.domain.events import Cause, CauseType, status_changed_event
from consumer.domain.rules import Transition
from consumer.errors import UnknownUserError
from consumer.offline.logspill import SortedLogSpill
from consumer.replay import parse_dead_letter
from consumer.service.checklog import CheckLogSink
from consumer.service.deadletter import InputRecord, dead_letter
from consumer.service.outbox import OutboxRelay
from consumer.service.relay_ledger import RelayLedger
from prometheus_client import CollectorRegistry

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa4ba902b7-01"
NOW = datetime(2026, 3, 1, 8, 15, 30, tzinfo=UTC)


class _Publisher:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)


class _Store:
    def __init__(self) -> None:
        self.cleared: list[Any] = []

    async def clear_outbox(self, docs: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> None:
        self.cleared.extend(doc_id for doc_id, _ in docs)

    async def insert_check_log(self, doc: Mapping[str, Any]) -> int:
        return int(doc["_id"])


def _transition() -> Transition:
    return Transition(0, "p-1", "USABLE", "USING", "USABLE -> USING", NOW)


def test_dead_letters_keep_every_header_in_order() -> None:
    headers = (("traceparent", TRACEPARENT.encode()), ("x-a", b"\x00\xff"), ("x-a", b"2"))
    record = InputRecord("in", 1, 7, b"42", b"{}", 1, headers)
    out = dead_letter(record, UnknownUserError("no user 42"), NOW, "g", "dlq")
    assert out.headers == headers
    assert parse_dead_letter(out.value).headers == headers
    assert orjson.loads(out.value)["headers"][1] == {"key": "x-a", "value_base64": "AP8="}


def test_a_record_without_headers_gives_a_dead_letter_without_headers() -> None:
    out = dead_letter(
        InputRecord("in", 0, 0, None, b"x", None), UnknownUserError("x"), NOW, "g", "d"
    )
    assert out.headers == ()
    assert "headers" not in orjson.loads(out.value)


def test_traceparent_of_reads_the_header() -> None:
    assert traceparent_of((("a", b"1"), ("traceparent", TRACEPARENT.encode()))) == TRACEPARENT
    assert traceparent_of(()) == ""
    assert traceparent_of((("traceparent", b"\xff"),)) == ""


async def test_status_changes_carry_the_cause_traceparent_as_a_header_only() -> None:
    cause = Cause(CauseType.TICKET_USED, "e-1", TRACEPARENT)
    entry = status_changed_event(42, _transition(), NOW, cause)
    assert entry["traceparent"] == TRACEPARENT  # kept in the outbox entry
    publisher = _Publisher()
    relay = OutboxRelay(
        cast("OutboxStore", _Store()),
        publisher,
        Metrics(CollectorRegistry()),
        "sc",
        RelayLedger(999),
    )
    assert await relay.relay([("doc", [entry])]) == 1
    (record,) = publisher.records
    assert record.headers == (("traceparent", TRACEPARENT.encode()),)
    assert "traceparent" not in orjson.loads(record.value)  # the body is the schema's

    untraced = status_changed_event(42, _transition(), NOW, Cause(CauseType.TICK, "t"))
    assert "traceparent" not in untraced


async def test_check_logs_carry_the_tick_traceparent() -> None:
    publisher = _Publisher()
    sink = CheckLogSink(
        cast("CheckLogStore", _Store()), publisher, Metrics(CollectorRegistry()), "cl", 900000
    )
    log = UserLog(42, (("p-1", "USABLE -> EXPIRED"),), ())
    with SortedLogSpill() as traced_spill, SortedLogSpill() as plain_spill:
        traced_spill.add(log)
        plain_spill.add(log)
        await sink.write(NOW, None, True, traced_spill, kind="full", traceparent=TRACEPARENT)
        await sink.write(NOW, None, True, plain_spill, kind="interval")
    traced, plain = publisher.records
    assert traced.headers == (("traceparent", TRACEPARENT.encode()),)
    assert plain.headers == ()
