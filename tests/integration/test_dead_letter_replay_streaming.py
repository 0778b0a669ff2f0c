"""``dead-letters list|replay`` against the local Kafka (issue 19): the topic is streamed
batch by batch over every partition, and a refused publish (a source topic that does not
exist, a record over the topic's ``max.message.bytes``) ends with one line on stderr and
exit 1, saying how many were replayed before it, instead of a traceback (or a 15 s wait
for a topic's metadata that reads as the broker being away)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from consumer.service.deadletter import InputRecord, dead_letter

from tests.integration.harness import REPO, ServiceEnv, read_topic


def cli(service: ServiceEnv, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "dead-letters", *args],
        env={**os.environ, **service.env},
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )


def letter(settings: Any, source_topic: str, offset: int, value: bytes) -> tuple[bytes, bytes]:
    record = InputRecord(source_topic, 0, offset, str(offset).encode(), value, 0)
    out = dead_letter(record, ValueError("x"), datetime.now(UTC), "g", settings.topic_dead_letter)
    return str(offset).encode(), bytes(out.value)


async def write_letters(
    service: ServiceEnv, letters: list[tuple[bytes, bytes]], partitions: int = 1
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=service.settings.kafka_bootstrap_servers, acks="all"
    )
    await producer.start()
    try:
        for number, (key, value) in enumerate(letters):
            await producer.send(
                service.settings.topic_dead_letter, value, key=key, partition=number % partitions
            )
        await producer.flush()
    finally:
        await producer.stop()


def last_error(result: subprocess.CompletedProcess[bytes]) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return stderr.splitlines()[-1]


@pytest.fixture
async def small_topic(service_env: ServiceEnv, kafka_admin: Any) -> AsyncIterator[str]:
    """A topic refusing records over 2 KiB."""
    name = f"{service_env.settings.mongodb_database}.small"
    await kafka_admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=1,
                replication_factor=1,
                topic_configs={"max.message.bytes": "2048"},
            )
        ]
    )
    yield name
    await kafka_admin.delete_topics([name])


async def test_replay_to_a_missing_source_topic_exits_1_saying_how_many_were_replayed(
    service_env: ServiceEnv,
) -> None:
    service = service_env.with_overrides(max_batch_records="1")
    settings = service.settings
    gone = f"{settings.mongodb_database}.gone"  # auto-creation is off on the local Kafka
    await write_letters(
        service,
        [
            letter(settings, settings.topic_ticket_used, 1, b'{"a":1}'),
            letter(settings, settings.topic_ticket_used, 2, b'{"a":2}'),
            letter(settings, gone, 3, b'{"a":3}'),
            letter(settings, settings.topic_ticket_used, 4, b'{"a":4}'),
        ],
    )

    started = time.monotonic()
    result = cli(service, "replay")

    assert result.returncode == 1
    line = last_error(result)
    assert line.startswith("pass-status: error: replay stopped after 2 replayed: "), line
    assert f"source topic {gone} does not exist" in line
    assert time.monotonic() - started < 14  # refused, not waited on until a timeout
    printed = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert [(p["action"], p["source_offset"]) for p in printed] == [
        ("replayed", 1),
        ("replayed", 2),
    ]
    replayed = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic_ticket_used, expect=2, settle=1.0
    )
    assert sorted(r.value for r in replayed) == [b'{"a":1}', b'{"a":2}']


async def test_replay_of_a_record_over_the_topics_max_message_bytes_exits_1(
    service_env: ServiceEnv, small_topic: str
) -> None:
    service = service_env.with_overrides(max_batch_records="1")
    settings = service.settings
    await write_letters(
        service,
        [
            letter(settings, small_topic, 1, b"small"),
            letter(settings, small_topic, 2, b"x" * 8000),
        ],
    )

    result = cli(service, "replay")

    assert result.returncode == 1
    line = last_error(result)
    assert line.startswith("pass-status: error: replay stopped after 1 replayed: "), line
    assert f"Kafka refused records for {small_topic}" in line
    assert "MessageSizeTooLarge" in line or "RecordTooLarge" in line


async def test_list_streams_every_letter_of_every_partition_in_batches(
    service_env: ServiceEnv,
) -> None:
    service = service_env.with_overrides(max_batch_records="50")
    settings = service.settings
    count = 1_500
    await write_letters(
        service,
        [letter(settings, settings.topic_ticket_used, o, b"{}") for o in range(count)],
        partitions=3,
    )

    result = cli(service, "list")

    assert result.returncode == 0, result.stderr.decode()
    printed = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert len(printed) == count
    where = [tuple(int(x) for x in p["dead_letter"].rsplit("/", 2)[1:]) for p in printed]
    assert where == sorted(where)  # one partition after another, each in offset order
    assert {partition for partition, _ in where} == {0, 1, 2}
    assert sorted(p["source_offset"] for p in printed) == list(range(count))
