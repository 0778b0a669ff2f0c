"""Dead-letter replay round trip, and headers / trace context carried from input to output.

An event for a user without a cache document is dead-lettered as ``unknown_user`` (keeping
its headers); the user is created; ``dead-letters replay`` re-drives it; the consumer applies
it (the status change carries the input's ``traceparent``); a second replay changes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import ConsumerProcess, ServiceEnv, read_topic, values
from tests.integration.harness import run_cli as cli

Collection = AsyncCollection[dict[str, Any]]
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa4ba902b7-01"


async def produce_with_headers(
    bootstrap: str, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def consumed(process: ConsumerProcess, topic: str, outcome: str) -> float:
    body = process.http_get("/metrics")[1].decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "pass_status_events_consumed_total" and sample.labels == {
                "topic": topic,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def wait_consumed(process: ConsumerProcess, topic: str, outcome: str, count: int) -> None:
    for _ in range(300):
        if consumed(process, topic, outcome) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{outcome} never reached {count}: {consumed(process, topic, outcome)}")


async def test_replay_round_trip_unknown_user_then_applied_then_no_change(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    bootstrap = settings.kafka_bootstrap_servers
    process = ConsumerProcess(service_env).start()
    consumers.append(process)
    the_pass = a_pass("USABLE", timedelta(hours=2))
    event = ticket_used(4711, the_pass["pass_uuid"])
    headers = [("traceparent", TRACEPARENT), ("x-producer", b"mobile-app")]
    await produce_with_headers(
        bootstrap, settings.topic_ticket_used, b"4711", orjson.dumps(event), headers
    )

    # 1. Dead-lettered, with the input's headers kept (as Kafka headers and in the body).
    (dead,) = await read_topic(bootstrap, settings.topic_dead_letter, expect=1)
    body = orjson.loads(dead.value)
    assert body["reason"] == "unknown_user"
    assert list(dead.headers) == headers
    assert [h["key"] for h in body["headers"]] == ["traceparent", "x-producer"]

    # Bad filters: exit 2, one line, nothing published.
    bad = cli(service_env, "dead-letters", "replay", "--until", "not-a-time")
    assert bad.returncode == 2
    assert bad.stderr.decode().count("\n") == 1
    assert bad.stderr.startswith(b"pass-status: error: dead-letters replay: argument --until")

    # 2. A dry run lists it and publishes nothing.
    dry = cli(service_env, "dead-letters", "replay", "--reason", "unknown_user", "--dry-run")
    assert dry.returncode == 0, dry.stderr.decode()
    (line,) = [orjson.loads(x) for x in dry.stdout.splitlines()]
    assert line["action"] == "would_replay"
    assert line["source_topic"] == settings.topic_ticket_used
    assert line["headers"]["traceparent"] == TRACEPARENT.decode()
    other = cli(service_env, "dead-letters", "list", "--reason", "not_json")
    assert other.returncode == 0
    assert other.stdout == b""  # filtered out
    inputs = await read_topic(bootstrap, settings.topic_ticket_used, expect=1, settle=1.0)
    assert len(inputs) == 1

    # 3. The user appears; the replay applies the event.
    await cache.insert_one(a_user(4711, [the_pass]))
    first = cli(service_env, "dead-letters", "replay", "--reason", "unknown_user")
    assert first.returncode == 0, first.stderr.decode()
    assert [orjson.loads(x)["action"] for x in first.stdout.splitlines()] == ["replayed"]
    (change,) = await read_topic(bootstrap, settings.topic_status_changed, expect=1)
    assert values([change])[0]["status_log"] == "USABLE -> USING"
    assert values([change])[0]["cause"]["event_id"] == event["event_id"]
    assert dict(change.headers)["traceparent"] == TRACEPARENT  # trace context carried
    doc = await cache.find_one({"user_id": 4711})
    assert doc is not None
    assert doc["passes"][0]["status"] == "USING"
    replayed = (await read_topic(bootstrap, settings.topic_ticket_used, expect=2))[-1]
    replay_mark = dict(replayed.headers)["pass-status-replayed-from"].decode()
    assert replay_mark == f"{settings.topic_dead_letter}/{dead.partition}/{dead.offset}"
    assert replayed.value == orjson.dumps(event)
    await wait_consumed(process, settings.topic_ticket_used, "applied", 1)

    # 4. A second replay re-publishes it, and it changes nothing.
    second = cli(service_env, "dead-letters", "replay", "--reason", "unknown_user")
    assert second.returncode == 0, second.stderr.decode()
    await wait_consumed(process, settings.topic_ticket_used, "no_change", 1)
    changes = await read_topic(bootstrap, settings.topic_status_changed, expect=1, settle=2.0)
    assert len(changes) == 1
    after = await cache.find_one({"user_id": 4711})
    assert after is not None
    assert after["passes"] == doc["passes"]
    assert len(await read_topic(bootstrap, settings.topic_dead_letter, expect=1, settle=1)) == 1
    assert process.stop() == 0
