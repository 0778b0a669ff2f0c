"""Inputs larger than the service's input limit, up to what their topic allows (8 MiB).

Before issue 19, an input of about 780 KB or more made a dead letter larger than the
producer's 1 MiB request limit (its value in base64, plus its headers twice): Kafka refused
the dead letter, the partition backed off and retried it for ever, and nothing after it was
applied. Now each is dead-lettered once as ``too_large``, cut to fit (a prefix, the full
length and SHA-256), and the partition goes on.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from consumer import schemas
from consumer.service.deadletter import record_size
from consumer.settings import PRODUCER_MAX_REQUEST_BYTES
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    eventually,
    read_topic,
    run_cli,
    values,
)

Collection = AsyncCollection[dict[str, Any]]
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
PARTITIONS = 3
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa4ba902b7-01"


def _padded(size: int, tag: str) -> bytes:
    """A JSON object of exactly ``size`` bytes (bytes that differ between the two inputs)."""
    head = b'{"event_id":"' + tag.encode() + b'","pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@contextlib.asynccontextmanager
async def _large_message_topic(service: ServiceEnv) -> AsyncIterator[ServiceEnv]:
    """``service`` with its ticket-used topic replaced by one that takes 8 MiB messages
    (created so: a config altered later reaches the broker's log a moment after)."""
    topic = f"{service.settings.topic_ticket_used}-8mib"
    admin = AIOKafkaAdminClient(bootstrap_servers=service.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        config = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=config)])
        yield service.with_overrides(topic_ticket_used=topic)
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def _produce_large(
    bootstrap: str, topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=TOPIC_MAX_MESSAGE_BYTES,
    )
    await producer.start()
    try:
        for value, headers in records:  # one at a time: their order in the partition is theirs
            await producer.send_and_wait(topic, value, key=b"7", headers=headers)
    finally:
        await producer.stop()


async def _lag(bootstrap: str, group_id: str, topic: str) -> int:
    """The group's lag on ``topic``: end offsets less committed offsets, all partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 4  # the four inputs, every one of them still there
    done = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
    return sum(end - max(done.get(tp, 0), 0) for tp, end in ends.items())


async def test_oversized_input_does_not_wedge_partition(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    async with _large_message_topic(service_env) as service:
        await _oversized_inputs_are_dead_lettered_once_and_the_partition_goes_on(
            service, cache, consumers
        )


async def _oversized_inputs_are_dead_lettered_once_and_the_partition_goes_on(
    service: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service.settings
    bootstrap = settings.kafka_bootstrap_servers
    first, second = a_pass("USABLE", timedelta(hours=1)), a_pass("USABLE", timedelta(hours=2))
    await cache.insert_one(a_user(7, [first, second]))
    big, huge = _padded(900_000, "big"), _padded(5_000_000, "huge")
    good_1, good_2 = ticket_used(7, first["pass_uuid"]), ticket_used(7, second["pass_uuid"])
    # Key "7" for all: one partition, in this order; each big input is followed by a good one.
    await _produce_large(
        bootstrap,
        settings.topic_ticket_used,
        [
            (big, [("traceparent", TRACEPARENT), ("padding", b"h" * 600_000)]),
            (orjson.dumps(good_1), []),
            (huge, [("traceparent", TRACEPARENT)]),
            (orjson.dumps(good_2), []),
        ],
    )

    consumers.append(ConsumerProcess(service).start())

    records = await read_topic(bootstrap, settings.topic_dead_letter, expect=2, wait=60, settle=3)
    assert len(records) == 2, "\n".join(consumers[0].raw[-8:])
    validate = schemas.validator(schemas.DEAD_LETTER)
    letters = values(records)
    for record, letter in zip(records, letters, strict=True):
        validate(letter)
        size = record_size(record.key, record.value, tuple(record.headers))
        assert size <= settings.dead_letter_max_bytes < PRODUCER_MAX_REQUEST_BYTES
        assert letter["reason"] == "too_large"
        assert letter["truncated"] is True
        assert letter["source_topic"] == settings.topic_ticket_used
        assert ("pass-status-dead-letter-truncated", b"true") in record.headers
    by_length = {letter["value_length"]: letter for letter in letters}
    assert sorted(by_length) == [900_000, 5_000_000]
    for raw, letter in ((big, by_length[900_000]), (huge, by_length[5_000_000])):
        assert letter["value_sha256"] == hashlib.sha256(raw).hexdigest()
        prefix = base64.b64decode(letter["value_base64"])
        assert prefix
        assert raw.startswith(prefix)
        assert len(prefix) < len(raw)
        assert letter["headers"][0] == {
            "key": "traceparent",
            "value_base64": base64.b64encode(TRACEPARENT).decode(),
        }
    assert by_length[900_000]["headers_dropped"] == 1  # the 600 KB one
    assert by_length[5_000_000]["headers_dropped"] == 0

    # The good inputs after each one were applied, in order, and nothing is left behind.
    changes = values(await read_topic(bootstrap, settings.topic_status_changed, expect=2))
    assert [c["cause"]["event_id"] for c in changes] == [good_1["event_id"], good_2["event_id"]]
    doc = await cache.find_one({"user_id": 7})
    assert doc is not None
    assert [p["status"] for p in doc["passes"]] == ["USING", "USING"]
    await eventually(
        lambda: _lag(bootstrap, settings.group_id, settings.topic_ticket_used),
        lambda lag: lag == 0,
        wait=30,
    )
    assert consumers[0].stop() == 0

    # The operator's tools: list shows them cut; replay refuses them, publishing nothing.
    listed = run_cli(service, "dead-letters", "list", "--reason", "too_large")
    assert listed.returncode == 0, listed.stderr.decode()
    lines = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((line["truncated"], line["value_length"]) for line in lines) == [
        (True, 900_000),
        (True, 5_000_000),
    ]
    replayed = run_cli(service, "dead-letters", "replay", "--reason", "too_large")
    assert replayed.returncode == 1
    assert [orjson.loads(line)["action"] for line in replayed.stdout.splitlines()] == [
        "refused",
        "refused",
    ]
    assert replayed.stderr.decode().splitlines()[-1] == (
        "pass-status: error: dead-letters replay: 2 cut dead letter(s) not replayed: they do "
        'not hold the whole record (lines with "action": "refused")'
    )
    await eventually(
        lambda: _lag(bootstrap, settings.group_id, settings.topic_ticket_used),
        lambda lag: lag == 0,  # still the same four inputs: nothing was re-published
        wait=1,
    )
