"""``tick`` and the online ``check`` through a real subprocess against real services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import orjson
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from consumer import schemas
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user
from tests.integration.harness import REPO, ServiceEnv, read_topic, values

Collection = AsyncCollection[dict[str, Any]]


def cli(service: ServiceEnv, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, **service.env, **env},
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )


async def test_tick_publishes_one_due_tick_per_shard(service_env: ServiceEnv) -> None:
    result = cli(service_env, "tick", "--mode", "due", PASS_STATUS_TICK_SHARDS="3")
    assert result.returncode == 0, result.stderr.decode()
    printed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(t["shard"] for t in printed) == [0, 1, 2]
    settings = service_env.settings
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_tick, expect=3)
    ticks = values(records)
    validate = schemas.validator(schemas.TICK)
    for event in ticks:
        validate(event)
        assert event["mode"] == "due"
        assert event["shards"] == 3
        assert event["apply"] is True
    assert sorted(r.key for r in records) == [b"0", b"1", b"2"]


async def test_tick_full_dry_run_for_one_user(service_env: ServiceEnv) -> None:
    result = cli(service_env, "tick", "--mode", "full", "--user", "42", "--dry-run")
    assert result.returncode == 0, result.stderr.decode()
    settings = service_env.settings
    [event] = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_tick, expect=1)
    )
    assert (event["mode"], event["user_id"], event["apply"]) == ("full", 42, False)


async def test_tick_exits_1_with_one_line_when_kafka_is_unreachable(
    service_env: ServiceEnv,
) -> None:
    result = cli(service_env, "tick", PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("pass-status: error: ")
    assert "Traceback" not in result.stderr.decode()


async def test_online_check_dry_run_then_apply(
    service_env: ServiceEnv, cache: Collection, check_logs: Collection
) -> None:
    expired = a_pass("USING", timedelta(minutes=-1), first_use="2024-01-01")
    await cache.insert_many([a_user(8, [expired]), a_user(9, [a_pass("USABLE")])])

    dry = cli(service_env, "check", "--user", "8")
    assert dry.returncode == 0, dry.stderr.decode()
    [dry_log] = [orjson.loads(line) for line in dry.stdout.splitlines()]
    assert dry_log["editMode"] is False
    assert dry_log["check_userID"] == 8
    assert dry_log["log"][0]["invalid_list"] == [
        {"pass_uuid": expired["pass_uuid"], "status_log": "USING -> EXPIRED"}
    ]
    doc = await cache.find_one({"user_id": 8})
    assert doc is not None
    assert doc["passes"][0]["status"] == "USING"

    applied = cli(service_env, "check", "--all", "--apply")
    assert applied.returncode == 0, applied.stderr.decode()
    [applied_log] = [orjson.loads(line) for line in applied.stdout.splitlines()]
    assert applied_log["editMode"] is True
    assert applied_log["check_userID"] == "all users"
    assert [entry["user_id"] for entry in applied_log["log"]] == [8]
    doc = await cache.find_one({"user_id": 8})
    assert doc is not None
    assert doc["passes"][0]["status"] == "EXPIRED"
    assert await check_logs.count_documents({}) == 2
    settings = service_env.settings
    [change] = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=1)
    )
    assert change["cause"]["type"] == "check"
    assert change["status_log"] == "USING -> EXPIRED"


def test_online_check_without_a_target_exits_2(service_env: ServiceEnv) -> None:
    result = cli(service_env, "check")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "pass-status: error: check: give --input FILE, --user ID or --all"
    ]


async def _small_check_log_topic(service: ServiceEnv, admin: Any, max_message_bytes: int) -> None:
    """Re-create the check-log topic with a broker-side message limit."""
    topic = service.settings.topic_check_log
    await admin.delete_topics([topic])
    for _ in range(100):  # deletion is asynchronous on the broker
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,
                        replication_factor=1,
                        topic_configs={"max.message.bytes": str(max_message_bytes)},
                    )
                ]
            )
        except TopicAlreadyExistsError:
            await asyncio.sleep(0.2)
        else:
            return
    raise AssertionError(f"topic {topic} could not be re-created")


async def test_online_check_sizes_parts_by_their_json_and_reports_a_refused_part_in_one_line(
    service_env: ServiceEnv, cache: Collection, kafka_admin: Any
) -> None:
    # Control characters take 1 byte in BSON and 6 in JSON: a log sized by BSON alone is
    # published 3 times larger than its budget.
    weird = [{**a_pass("USABLE"), "status": "\x01" * 200} for _ in range(10)]
    await cache.insert_many([a_user(u, weird) for u in range(1, 101)])
    await _small_check_log_topic(service_env, kafka_admin, 150_000)

    fits = cli(service_env, "check", "--all", PASS_STATUS_CHECK_LOG_MAX_BYTES="100000")
    assert fits.returncode == 0, fits.stderr.decode()[-2000:]
    parts = [orjson.loads(line) for line in fits.stdout.splitlines()]
    assert len(parts) > 1
    assert all(len(orjson.dumps(p)) <= 100_000 for p in parts)
    assert sorted(e["user_id"] for p in parts for e in p["log"]) == list(range(1, 101))

    # A budget above what the topic accepts: one line on stderr, exit 1, no traceback.
    refused = cli(service_env, "check", "--all", PASS_STATUS_CHECK_LOG_MAX_BYTES="900000")
    stderr = refused.stderr.decode()
    assert refused.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("pass-status: error: Kafka refused")
