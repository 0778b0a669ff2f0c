"""The consumer process end to end: ticket-used and ticks in, MongoDB and events out."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from consumer import schemas
from consumer.domain.watermarks import Watermark, key_published
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, tick, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    eventually,
    produce,
    produce_json,
    read_topic,
    values,
)

Collection = AsyncCollection[dict[str, Any]]


def _watermarks(found: list[dict[str, Any]]) -> dict[int, Watermark]:
    return {d["_id"]: Watermark(d["through"], frozenset(d["unsettled"])) for d in found}


def _strip_service_fields(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for key in (
        "next_check_at",
        "pass_status_checked_at",
        "pass_status_rev",
        "pass_status_write",
        "pass_status_outbox",
        "pass_status_outbox_since",
        "pass_status_outbox_relay",
    ):
        out.pop(key, None)
    return out


async def test_ticket_used_sets_using_once_and_duplicate_changes_nothing(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    target = a_pass("USABLE", timedelta(hours=2))
    other = a_pass("USING", timedelta(hours=3), first_use="2024-01-01T00:00:00Z")
    await cache.insert_one(a_user(101, [target, other]))
    before = await cache.find_one({"user_id": 101})
    assert before is not None

    consumers.append(ConsumerProcess(service_env).start())
    event = ticket_used(101, target["pass_uuid"])
    await produce_json(settings.kafka_bootstrap_servers, settings.topic_ticket_used, [event])
    records = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=1
    )

    changes = values(records)
    assert len(changes) == 1
    schemas.validator(schemas.PASS_STATUS_CHANGED)(changes[0])
    assert changes[0]["pass_uuid"] == target["pass_uuid"]
    assert changes[0]["status_log"] == "USABLE -> USING"
    assert changes[0]["cause"] == {"type": "ticket_used", "event_id": event["event_id"]}
    assert records[0].key == b"101"

    # Once the broker acknowledged the event, the relay's source says so in its saved
    # watermark; the document is not written again for it.
    after = await cache.find_one({"user_id": 101})
    assert after is not None
    assert [e["event_id"] for e in after["pass_status_outbox"]] == [changes[0]["event_id"]]
    relays = cache.database["pass_status_relays"]
    marks = await eventually(
        lambda: relays.find({}).to_list(),
        lambda found: key_published(after["pass_status_outbox_relay"], _watermarks(found)),
    )
    assert marks
    assert after["passes"][0]["status"] == "USING"
    assert after["passes"][0]["payload"]["first_use"] == event["used_at"]
    # Everything but the status and first_use is untouched, unknown fields included.
    expected = _strip_service_fields(before)
    expected["passes"][0]["status"] = "USING"
    expected["passes"][0]["payload"]["first_use"] = event["used_at"]
    assert _strip_service_fields(after) == expected
    assert after["next_check_at"] == datetime.fromisoformat(target["payload"]["expiration"])

    # The same event again (redelivery): nothing changes, nothing new is published.
    await produce_json(settings.kafka_bootstrap_servers, settings.topic_ticket_used, [event])
    again = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=1, settle=4
    )
    assert len(again) == 1
    final = await cache.find_one({"user_id": 101})
    assert final is not None
    assert final["pass_status_rev"] == after["pass_status_rev"]
    assert consumers[0].stop() == 0


async def test_bad_input_is_dead_lettered_and_the_partition_goes_on(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    known = a_pass("USABLE", timedelta(hours=1))
    await cache.insert_one(a_user(7, [known]))
    key = b"7"  # one key: everything lands in the same partition, in this order
    valid = ticket_used(7, known["pass_uuid"])
    bad_ticket: list[tuple[bytes | None, bytes | None]] = [
        (key, b"\xff\xfe not json"),
        (
            key,
            orjson.dumps({"event_id": "x", "user_id": "seven", "pass_uuid": "p", "used_at": "now"}),
        ),
        (key, orjson.dumps(ticket_used(999999, "nope"))),
        (key, orjson.dumps(ticket_used(7, "no-such-pass"))),
        (key, orjson.dumps({**ticket_used(7, known["pass_uuid"]), "used_at": "not a time"})),
        (key, b'{"event_id": "' + b"x" * 70000 + b'"}'),
        (key, orjson.dumps(valid)),
    ]
    far_future = tick("due", at=datetime.now(UTC) + timedelta(days=2))
    consumers.append(ConsumerProcess(service_env).start())
    await produce(settings.kafka_bootstrap_servers, settings.topic_ticket_used, bad_ticket)
    await produce(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [(b"0", orjson.dumps(far_future)), (b"0", b"[1,2]")],
    )

    dead = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_dead_letter, expect=8)
    )
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == sorted(
        [
            "not_json",
            "schema_violation",
            "unknown_user",
            "unknown_pass",
            "unreadable_time",
            "too_large",
            "tick_in_future",
            "schema_violation",
        ]
    )
    validate = schemas.validator(schemas.DEAD_LETTER)
    for d in dead:
        validate(d)
    not_json = next(d for d in dead if d["reason"] == "not_json")
    assert not_json["value_base64"] == "//4gbm90IGpzb24="  # the raw bytes, kept
    assert not_json["source_topic"] == settings.topic_ticket_used
    unreadable = next(d for d in dead if d["reason"] == "unreadable_time")
    assert "not a time" in unreadable["message"]

    changes = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=1)
    )
    assert [c["cause"]["event_id"] for c in changes] == [valid["event_id"]]
    doc = await cache.find_one({"user_id": 7})
    assert doc is not None
    assert doc["passes"][0]["status"] == "USING"
    assert consumers[0].stop() == 0


async def test_missing_topics_exit_2_with_a_clear_message(service_env: ServiceEnv) -> None:
    broken = service_env.with_overrides(topic_tick="no-such-topic-here")
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env={**os.environ, **broken.env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("pass-status: error: missing Kafka topics: no-such-topic-here")
    assert "docs/operations.md, Topics" in last  # where the topic spec is
