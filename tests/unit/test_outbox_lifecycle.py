"""The outbox lifecycle's invariants (``consumer/domain/outbox.py``), one test each, on fakes.

Each test drives the real service layer (writer, relay, sweeper, ticket-used handler) over
the in-memory store, interleaving steps where a race would hurt.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from consumer.domain.events import Cause, CauseType
from consumer.domain.outbox import OUTBOX, OUTBOX_REJECTED, OUTBOX_SINCE
from consumer.errors import BrokerUnavailableError, PublishRejectedError, StoreUnavailableError
from consumer.service.deadletter import InputRecord
from consumer.service.outbox import RETIRE_SILENT_SOURCES_AFTER, UNSAVED_WATERMARK_LIMIT

from tests.unit.fakes import FakeCacheStore, FakeService

NOW = datetime.now(UTC).replace(microsecond=0)
TICK = Cause(CauseType.TICK, "tick-1")


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def a_pass(uuid: str, status: str, expires_in: timedelta, first_use: str | None = None) -> Any:
    return {
        "pass_uuid": uuid,
        "status": status,
        "payload": {"expiration": iso(NOW + expires_in), "first_use": first_use},
    }


def user_doc(*passes: Any, **extra: Any) -> dict[str, Any]:
    return {"_id": "d7", "user_id": 7, "passes": list(passes), **extra}


def ticket_used(pass_uuid: str, offset: int = 0) -> InputRecord:
    body = {"event_id": f"tu-{offset}", "user_id": 7, "pass_uuid": pass_uuid, "used_at": iso(NOW)}
    return InputRecord("ticket-used", 0, offset, b"7", orjson.dumps(body), None)


def pending_entry(pass_uuid: str, log: str) -> dict[str, Any]:
    """An entry an earlier write left in the outbox."""
    return {"event_id": f"ev-{pass_uuid}", "user_id": 7, "pass_uuid": pass_uuid, "status_log": log}


async def test_i1_an_entry_is_written_with_its_transition_or_not_at_all() -> None:
    store = FakeCacheStore(user_doc(a_pass("p", "USING", -timedelta(hours=1), "x")))
    service = FakeService(store)
    store.fail_next("write_user", BrokerUnavailableError("store down"))
    with pytest.raises(BrokerUnavailableError):
        await service.sweeper.due(NOW, 0, 1, True, TICK)
    doc = store.doc("d7")
    assert doc["passes"][0]["status"] == "USING"
    assert OUTBOX not in doc

    service.publisher.fail_next("publish", BrokerUnavailableError("kafka down"))
    with pytest.raises(BrokerUnavailableError):
        await service.sweeper.due(NOW, 0, 1, True, TICK)
    doc = store.doc("d7")
    assert doc["passes"][0]["status"] == "EXPIRED"
    assert [e["status_log"] for e in doc[OUTBOX]] == ["USING -> EXPIRED"]


async def test_i2_a_sweep_writing_from_a_read_older_than_a_clear_leaves_its_entry_findable() -> (
    None
):
    """The outbox marker race (issue 12, item 1): a sweep reads a document whose outbox
    holds an owner's entry; the owner clears it; the sweep writes from its stale read and
    its publish fails. The sweep's entry must still be found by the orphan scan."""
    owners = [pending_entry("a", "USABLE -> USING")]
    store = FakeCacheStore(
        user_doc(
            a_pass("a", "USING", timedelta(days=1), "x"),
            a_pass("b", "USING", -timedelta(hours=1), "x"),
            **{OUTBOX: owners, OUTBOX_SINCE: NOW - timedelta(seconds=1)},
        )
    )
    service = FakeService(store)

    async def owner_clears() -> None:
        await store.clear_outbox([("d7", owners)])

    store.before("write_user", owner_clears)  # between the sweep's read and its write
    service.publisher.fail_next("publish", BrokerUnavailableError("kafka down"))
    with pytest.raises(BrokerUnavailableError):
        await service.sweeper.due(NOW, 0, 1, True, TICK)

    assert store.lost_outboxes() == []
    assert [e["status_log"] for e in store.doc("d7")[OUTBOX]] == ["USING -> EXPIRED"]
    await service.relay.relay_orphans(NOW + timedelta(hours=1), timedelta(seconds=30))
    assert [e["status_log"] for e in service.status_events()] == ["USING -> EXPIRED"]
    assert store.doc("d7")[OUTBOX] == []
    assert store.doc("d7")[OUTBOX_SINCE] is None


async def test_i3_a_clear_removes_only_the_acknowledged_entries() -> None:
    store = FakeCacheStore(user_doc(a_pass("b", "USING", -timedelta(hours=1), "x"), **{OUTBOX: []}))
    service = FakeService(store)
    acknowledged = [pending_entry("z", "USABLE -> USING")]
    await service.sweeper.due(NOW, 0, 1, True, TICK)  # relays its own entry
    own = store.doc("d7")[OUTBOX]
    assert [e["status_log"] for e in own] == ["USING -> EXPIRED"]
    await store.clear_outbox([("d7", acknowledged)])  # a stale clear of another entry
    assert store.doc("d7")[OUTBOX] == own

    store.cache.update_one({"_id": "d7"}, {"$set": {OUTBOX: [*acknowledged, {"event_id": "x"}]}})
    await store.clear_outbox([("d7", acknowledged)])
    assert store.doc("d7")[OUTBOX] == [{"event_id": "x"}]  # a concurrent append stays


async def test_i3_a_published_outbox_is_kept_until_the_next_write_which_drops_it() -> None:
    """No second write per change: the relay's acknowledgement is recorded in the source's
    watermark, not in the document; the document's next write drops the entries."""
    store = FakeCacheStore(
        user_doc(a_pass("a", "USABLE", timedelta(days=1)), a_pass("b", "USABLE", timedelta(days=1)))
    )
    service = FakeService(store)
    await service.ticket_used.handle([ticket_used("a", 0)])
    writes = store.doc("d7")["pass_status_rev"]
    assert [e["pass_uuid"] for e in store.doc("d7")[OUTBOX]] == ["a"]
    assert await service.unpublished() == {}
    assert store.doc("d7")["pass_status_rev"] == writes  # the relay wrote no document

    await service.ticket_used.handle([ticket_used("b", 1)])
    assert [e["pass_uuid"] for e in store.doc("d7")[OUTBOX]] == ["b"]  # a's dropped
    assert [e["pass_uuid"] for e in service.status_events()] == ["a", "b"]  # no duplicate


async def test_i3_a_write_from_a_stale_watermark_keeps_and_relays_what_it_cannot_know() -> None:
    """Replica B has not yet read A's watermark: to B, A's entry may be unpublished, so B
    keeps it and publishes it again ahead of its own (same ``event_id``), never drops it."""
    store = FakeCacheStore(user_doc(a_pass("p", "USABLE", timedelta(hours=1))))
    replica_a = FakeService(store)
    replica_b = FakeService(store, replica_a.publisher)
    await replica_b.relay.keep_watermark(NOW)  # B registered; A's state not known to it
    await replica_b.relay.open_ticket()
    await replica_a.ticket_used.handle([ticket_used("p")])

    await replica_b.sweeper.due(datetime.now(UTC) + timedelta(hours=2), 0, 1, True, TICK)

    logs = [e["status_log"] for e in replica_a.status_events()]
    assert logs == ["USABLE -> USING", "USABLE -> USING", "USING -> EXPIRED"]
    assert [e["status_log"] for e in store.doc("d7")[OUTBOX]] == logs[1:]
    assert await replica_b.unpublished() == {}


async def test_i5_a_republished_entry_carries_the_same_event_id() -> None:
    """A crash after the broker acknowledged, before the watermark was saved: the entry's
    key reads unpublished, and any replica's orphan relay publishes it again."""
    store = FakeCacheStore(user_doc(a_pass("b", "USING", -timedelta(hours=1), "x")))
    crashed = FakeService(store)
    await crashed.sweeper.due(NOW, 0, 1, True, TICK)  # published; watermark never saved
    survivor = FakeService(store, crashed.publisher)
    await survivor.relay.relay_orphans(NOW + timedelta(hours=1), timedelta(seconds=30))
    first, again = crashed.status_events()
    assert first == again
    assert store.lost_outboxes() == []
    assert store.doc("d7")[OUTBOX] == []  # the orphan relay clears what it published


async def test_i4_a_passes_events_are_published_in_the_order_of_its_transitions() -> None:
    """Issue 12, item 2: a ticket-used batch writes ``USABLE -> USING``; before it
    publishes, a tick's sweep (running alongside) writes ``USING -> EXPIRED`` for the same
    pass. Consumers must never see the second first."""
    # Expiring well after the ticket-used batch's own clock (the wall clock, however late
    # in a long test run this test comes), before the tick's instant.
    store = FakeCacheStore(user_doc(a_pass("p", "USABLE", timedelta(hours=1))))
    service = FakeService(store)
    held = service.publisher.hold("publish")  # the ticket-used batch's relay

    batch = asyncio.create_task(service.ticket_used.handle([ticket_used("p")]))
    await held.reached.wait()
    tick_at = datetime.now(UTC) + timedelta(hours=2)
    sweep = asyncio.create_task(service.sweeper.due(tick_at, 0, 1, True, TICK))
    for _ in range(50):  # let the sweep go as far as it can
        await asyncio.sleep(0)
    held.release()
    await asyncio.gather(batch, sweep)

    logs = [e["status_log"] for e in service.status_events()]
    assert logs == ["USABLE -> USING", "USING -> EXPIRED"]
    assert await service.unpublished() == {}
    assert store.doc("d7").get(OUTBOX_SINCE) is None
    assert len(service.relay._locks) == 0  # no per-document state outlives its relays


async def test_i4_across_replicas_each_events_first_publication_keeps_the_order() -> None:
    """Two replicas (no shared lock): the sweep's relay publishes the whole outbox head
    first, so ``USABLE -> USING`` is first seen before ``USING -> EXPIRED``; the batch's
    later copy of it is a re-publication with the same ``event_id``."""
    store = FakeCacheStore(user_doc(a_pass("p", "USABLE", timedelta(hours=1))))
    replica_a = FakeService(store)
    replica_b = FakeService(store, replica_a.publisher)  # one topic, seen by both
    held = replica_a.publisher.hold("publish")

    batch = asyncio.create_task(replica_a.ticket_used.handle([ticket_used("p")]))
    await held.reached.wait()
    await replica_b.sweeper.due(datetime.now(UTC) + timedelta(hours=2), 0, 1, True, TICK)
    held.release()
    await batch

    events = replica_a.status_events()
    first_seen = list(dict.fromkeys(e["event_id"] for e in events))
    by_id = {e["event_id"]: e["status_log"] for e in events}
    assert [by_id[i] for i in first_seen] == ["USABLE -> USING", "USING -> EXPIRED"]
    assert store.lost_outboxes() == []
    await replica_a.relay.keep_watermark(NOW)
    assert await replica_b.unpublished() == {}


def refuse_pass(uuid: str) -> Any:
    """A predicate refusing the status-change events of pass ``uuid`` (a record too large)."""
    return lambda record: (
        record.topic == FakeService.STATUS_TOPIC
        and (orjson.loads(record.value)["pass_uuid"] == uuid)
    )


async def test_i6_an_event_kafka_refuses_for_good_leaves_the_outbox_and_later_ones_flow() -> None:
    """Issue 12 left-over: an event Kafka refuses for good (too large, not authorized)
    stayed in the outbox, the orphan relay failed on it every interval, and every later
    event of the user sat behind it. It must move, whole, to the rejected list."""
    refused = {
        "event_id": "ev-a",
        "user_id": 7,
        "pass_uuid": "a",
        "status_log": "USABLE -> USING",
        "cause": {"type": "ticket_used", "event_id": "tu-1"},
    }
    store = FakeCacheStore(
        user_doc(
            a_pass("a", "USING", timedelta(days=1), "x"),
            a_pass("b", "USING", -timedelta(hours=1), "x"),
            **{OUTBOX: [refused], OUTBOX_SINCE: NOW - timedelta(hours=1)},
        )
    )
    service = FakeService(store)
    service.publisher.refuse(refuse_pass("a"))

    await service.sweeper.due(NOW, 0, 1, True, TICK)  # appends b's event behind a's
    await service.relay.relay_orphans(NOW + timedelta(hours=1), timedelta(seconds=30))

    # b's event went out (again, with the same event_id, when the relay sought the refused one).
    assert {e["pass_uuid"] for e in service.status_events()} == {"b"}
    doc = store.doc("d7")
    assert [e["pass_uuid"] for e in doc[OUTBOX]] == ["b"]  # published, kept until next write
    assert await service.unpublished() == {}
    assert doc[OUTBOX_SINCE] is None
    assert doc[OUTBOX_REJECTED] == [refused]  # whole, for a replay
    assert service.metrics.registry.get_sample_value("pass_status_outbox_rejected_total") == 1

    # Nothing is left to try: the next orphan relays publish nothing and fail on nothing.
    attempts = service.publisher.calls["publish"]
    await service.relay.relay_orphans(NOW + timedelta(hours=2), timedelta(seconds=30))
    assert service.publisher.calls["publish"] == attempts
    assert store.lost_outboxes() == []


async def test_i6_a_refused_event_of_a_ticket_used_batch_does_not_dead_letter_its_input() -> None:
    """The input was good: its transition is kept and its offset may be committed; only
    the event is set aside (with the user's other events, which still go out)."""
    store = FakeCacheStore(
        user_doc(
            a_pass("a", "USABLE", timedelta(days=1)),
            a_pass("b", "USABLE", timedelta(days=1)),
        )
    )
    service = FakeService(store)
    service.publisher.refuse(refuse_pass("a"))

    await service.ticket_used.handle([ticket_used("a", 0), ticket_used("b", 1)])

    assert service.dead_letters() == []
    assert {(e["pass_uuid"], e["status_log"]) for e in service.status_events()} == {
        ("b", "USABLE -> USING")
    }
    doc = store.doc("d7")
    assert [p["status"] for p in doc["passes"]] == ["USING", "USING"]
    assert [e["pass_uuid"] for e in doc[OUTBOX_REJECTED]] == ["a"]
    assert [e["pass_uuid"] for e in doc[OUTBOX]] == ["b"]
    assert await service.unpublished() == {}
    assert service.metrics.registry.get_sample_value("pass_status_outbox_rejected_total") == 1


async def test_i6_a_refusal_of_the_topic_itself_leaves_every_event_queued() -> None:
    """Not authorized on the topic: no event passes, so none is moved aside; they stay
    queued (the backlog alert fires) and drain by themselves once an operator fixes it."""
    store = FakeCacheStore(user_doc(a_pass("b", "USING", -timedelta(hours=1), "x")))
    service = FakeService(store)
    service.publisher.refuse(
        lambda record: record.topic == FakeService.STATUS_TOPIC, PublishRejectedError
    )
    with pytest.raises(PublishRejectedError):
        await service.sweeper.due(NOW, 0, 1, True, TICK)
    assert [e["status_log"] for e in store.doc("d7")[OUTBOX]] == ["USING -> EXPIRED"]
    assert OUTBOX_REJECTED not in store.doc("d7")

    service.publisher.refuse(lambda _record: False)  # the operator fixed the ACLs
    await service.relay.relay_orphans(NOW + timedelta(hours=1), timedelta(seconds=30))
    assert [e["status_log"] for e in service.status_events()] == ["USING -> EXPIRED"]
    assert store.doc("d7")[OUTBOX] == []


async def test_the_backlog_counts_entries_waiting_past_the_in_flight_grace_only() -> None:
    """Replica A's relay published; until A saves its watermark, A's entry reads
    unpublished to B. The backlog gauge (and its alert) counts it only once it has waited
    longer than a relay takes and a watermark save comes."""
    store = FakeCacheStore(user_doc(a_pass("p", "USABLE", timedelta(hours=1))))
    replica_a = FakeService(store)
    replica_b = FakeService(store, replica_a.publisher)
    await replica_a.ticket_used.handle([ticket_used("p")])
    now = datetime.now(UTC)
    grace = timedelta(seconds=5)

    orphan_age = timedelta(seconds=30)
    assert await replica_b.relay.relay_orphans(now, orphan_age, in_flight=grace) == 0
    later = now + timedelta(seconds=10)
    assert await replica_b.relay.relay_orphans(later, orphan_age, in_flight=grace) == 1
    await replica_a.relay.keep_watermark(later)
    assert await replica_b.relay.relay_orphans(later, orphan_age, in_flight=grace) == 0
    assert len(replica_a.status_events()) == 1  # never an orphan: not published again


async def test_a_source_that_cannot_save_its_watermark_stops_writing_before_it_may_be_retired() -> (
    None
):
    """Other replicas take a source silent for 15 minutes for a crashed one and stop
    looking for its entries: one whose saves fail must stop stamping new entries well
    before that, and go on once a save succeeds."""
    assert UNSAVED_WATERMARK_LIMIT < RETIRE_SILENT_SOURCES_AFTER
    store = FakeCacheStore(
        user_doc(a_pass("a", "USABLE", timedelta(days=1)), a_pass("b", "USABLE", timedelta(days=1)))
    )
    service = FakeService(store)
    clock = [1000.0]
    service.relay.ledger.clock = lambda: clock[0]
    await service.ticket_used.handle([ticket_used("a", 0)])  # registers: saved at 1000
    clock[0] += UNSAVED_WATERMARK_LIMIT.total_seconds() + 1
    # The periodic job's save fails, and so does the one the next relay tries itself.
    store.fail_next("save_relay_watermark", StoreUnavailableError("relays refused"), times=2)
    with pytest.raises(StoreUnavailableError):
        await service.relay.keep_watermark(NOW)

    with pytest.raises(StoreUnavailableError, match="watermark not saved"):
        await service.ticket_used.handle([ticket_used("b", 1)])
    assert store.doc("d7")["passes"][1]["status"] == "USABLE"  # nothing written

    await service.relay.keep_watermark(NOW)
    await service.ticket_used.handle([ticket_used("b", 1)])
    assert store.doc("d7")["passes"][1]["status"] == "USING"


async def test_a_long_sweep_without_the_service_s_periodic_job_keeps_its_watermark_saved() -> None:
    """A one-shot command (``check --all``, a sweep of a million users: minutes) runs no
    periodic job: its relays save the watermark themselves, at most once an interval, so
    it never takes itself for a silent source (found by the 1M-user full-check benchmark)."""
    store = FakeCacheStore(
        *(
            {
                **user_doc(a_pass("p", "USING", -timedelta(hours=1), "x")),
                "_id": f"d{u}",
                "user_id": u,
            }
            for u in range(1, 9)
        )
    )
    service = FakeService(store)
    clock = [1000.0]
    service.relay.ledger.clock = lambda: clock[0]

    async def minutes_pass() -> None:
        clock[0] += UNSAVED_WATERMARK_LIMIT.total_seconds() / 2

    for _ in range(8):
        store.before("write_user", minutes_pass)
    await service.sweeper.full(None, True, NOW, TICK)

    assert [d["passes"][0]["status"] for d in store.cache.docs] == ["EXPIRED"] * 8
    assert await service.unpublished() == {}
