"""``tick`` and the online ``check`` through a real subprocess against real services."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import orjson
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
