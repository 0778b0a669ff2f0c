"""Concurrency, consumer-group membership, restarts and crash recovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.adapters.metrics import Metrics
from consumer.adapters.mongo import MongoCacheStore, make_client
from consumer.domain.events import Cause, CauseType
from consumer.domain.ids import status_changed_event_id
from consumer.domain.times import format_instant
from consumer.service.relay_ledger import RelayLedger, RelayTicket
from consumer.service.writer import UserResult, UserToWrite, UserWriter, WriteOptions
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    eventually,
    produce_json,
    read_topic,
    values,
)
from tests.unit.fakes import STAMP

Collection = AsyncCollection[dict[str, Any]]


async def test_a_concurrent_change_between_read_and_write_is_not_lost(
    service_env: ServiceEnv, cache: Collection
) -> None:
    now = datetime.now(UTC)
    first = a_pass("USABLE", timedelta(hours=1), now=now)
    second = a_pass("USING", timedelta(hours=1), first_use="x", now=now)
    await cache.insert_one(a_user(55, [first, second]))
    stale = await cache.find_one({"user_id": 55})
    assert stale is not None

    # The refresher rewrites the user's passes after our read: the second pass now expired.
    refreshed_second = {
        **second,
        "payload": {**second["payload"], "expiration": format_instant(now - timedelta(minutes=1))},
    }
    await cache.update_one(
        {"user_id": 55}, {"$set": {"passes.1": refreshed_second, "timestamp": 1800000000}}
    )

    metrics = Metrics(CollectorRegistry())
    client = make_client(service_env.settings)
    try:
        store = MongoCacheStore(client, service_env.settings, metrics)
        writer = UserWriter(store, metrics, 3, RelayLedger(999))
        event = ticket_used(55, first["pass_uuid"])
        import orjson  # noqa: PLC0415
        from consumer.parsing import parse_ticket_used  # noqa: PLC0415 - the edge parser, as the consumer uses it

        parsed = parse_ticket_used(orjson.dumps(event), 65536)
        cause = Cause(CauseType.TICKET_USED, event["event_id"])
        (result,) = await writer.update_round(
            [UserToWrite(stale, [parsed], cause)],
            now,
            WriteOptions(concurrency=4, ticket=RelayTicket(1, STAMP.key)),
        )
    finally:
        await client.close()

    assert isinstance(result, UserResult)
    assert result.written
    assert metrics.write_conflicts._value.get() == 1
    doc = await cache.find_one({"user_id": 55})
    assert doc is not None
    assert doc["timestamp"] == 1800000000  # the refresher's write survived
    assert doc["passes"][1]["payload"]["expiration"] == refreshed_second["payload"]["expiration"]
    # ...and our evaluation was redone on the refreshed document.
    assert [p["status"] for p in doc["passes"]] == ["USING", "EXPIRED"]
    assert sorted(e["status_log"] for e in doc["pass_status_outbox"]) == [
        "USABLE -> USING",
        "USING -> EXPIRED",
    ]


async def test_two_consumers_share_partitions_and_one_takes_over(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    bootstrap = settings.kafka_bootstrap_servers
    users = {uid: a_pass("USABLE", timedelta(hours=1)) for uid in range(1000, 1040)}
    await cache.insert_many([a_user(uid, [p]) for uid, p in users.items()])
    one = ConsumerProcess(service_env, name="one").start()
    two = ConsumerProcess(service_env, name="two").start()
    consumers.extend([one, two])
    # Both end up with a share of the 6 partitions (3 ticket-used + 3 tick).
    await asyncio.sleep(1)
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        last_one = one.events("partitions_assigned")[-1]["partitions"]
        last_two = two.events("partitions_assigned")[-1]["partitions"]
        if last_one and last_two and len(last_one) + len(last_two) == 6:
            break
        await asyncio.sleep(0.2)
    assert last_one
    assert last_two
    assert set(last_one).isdisjoint(last_two)

    first_half = list(users)[:20]
    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, users[u]["pass_uuid"]) for u in first_half],
    )
    await read_topic(bootstrap, settings.topic_status_changed, expect=20, settle=0)
    assert one.stop() == 0  # graceful: finishes, commits, leaves the group

    second_half = list(users)[20:]
    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, users[u]["pass_uuid"]) for u in second_half],
    )
    changes = values(
        await read_topic(bootstrap, settings.topic_status_changed, expect=40, settle=3)
    )
    ids = [c["event_id"] for c in changes]
    assert len(ids) == 40, "nothing lost, nothing applied twice"
    assert set(ids) == {
        status_changed_event_id(u, p["pass_uuid"], "USING") for u, p in users.items()
    }
    assert sorted(c["user_id"] for c in changes) == sorted(users)
    assert two.events("partitions_assigned")[-1]["partitions"] != last_two  # took over
    assert await cache.count_documents({"passes.0.status": "USING"}) == 40
    assert two.stop() == 0


async def test_restart_resumes_after_committed_offsets_and_relays_a_crash_outbox(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    bootstrap = settings.kafka_bootstrap_servers
    passes = {uid: a_pass("USABLE", timedelta(hours=1)) for uid in range(1, 7)}
    # A document as a crash leaves it: transition written, its event still in the outbox.
    crashed = a_pass("USING", timedelta(hours=1), first_use="x")
    orphan_event = {
        "event_id": status_changed_event_id(99, crashed["pass_uuid"], "USING"),
        "user_id": 99,
        "pass_uuid": crashed["pass_uuid"],
        "from_status": "USABLE",
        "to_status": "USING",
        "status_log": "USABLE -> USING",
        "effective_at": "2024-01-01T00:00:00.000Z",
        "detected_at": "2024-01-01T00:00:00.000Z",
        "cause": {"type": "ticket_used", "event_id": "before-the-crash"},
    }
    await cache.insert_many(
        [a_user(uid, [p]) for uid, p in passes.items()]
        + [
            a_user(
                99,
                [crashed],
                pass_status_outbox=[orphan_event],
                pass_status_outbox_since=datetime.now(UTC) - timedelta(minutes=5),
                next_check_at=datetime.now(UTC) + timedelta(hours=1),
            )
        ]
    )
    first = ConsumerProcess(service_env, name="first").start()
    consumers.append(first)
    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, passes[u]["pass_uuid"]) for u in (1, 2, 3)],
    )
    published = values(
        await read_topic(bootstrap, settings.topic_status_changed, expect=4, settle=0)
    )
    assert orphan_event["event_id"] in {e["event_id"] for e in published}
    orphan_doc = await eventually(
        lambda: cache.find_one({"user_id": 99}),
        lambda d: (
            d is not None and not d["pass_status_outbox"] and d["pass_status_outbox_since"] is None
        ),
    )
    assert first.stop() == 0
    assert orphan_doc is not None
    assert orphan_doc["pass_status_outbox_since"] is None

    # While no consumer runs, more events arrive; the restarted one applies exactly those.
    await produce_json(
        bootstrap,
        settings.topic_ticket_used,
        [ticket_used(u, passes[u]["pass_uuid"]) for u in (4, 5, 6)],
    )
    second = ConsumerProcess(service_env, name="second").start()
    consumers.append(second)
    changes = values(await read_topic(bootstrap, settings.topic_status_changed, expect=7, settle=3))
    by_user = sorted(c["user_id"] for c in changes)
    assert by_user == [1, 2, 3, 4, 5, 6, 99]
    assert {e["user_id"] for e in second.events("user_updated")} == {4, 5, 6}
    assert second.stop() == 0
