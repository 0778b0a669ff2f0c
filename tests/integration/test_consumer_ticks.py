"""Ticks: ``due`` sweeps read only what is due; ``full`` checks are the old job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer import schemas
from consumer.domain.user_update import NEVER_DUE
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, tick
from tests.integration.harness import ConsumerProcess, ServiceEnv, produce_json, read_topic, values

Collection = AsyncCollection[dict[str, Any]]


async def test_due_tick_expires_exactly_the_due_passes_and_reads_only_due_documents(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    now = datetime.now(UTC)
    tick_at = now + timedelta(seconds=30)
    due_users = [201, 202, 203]
    later_users = [301, 302, 303, 304, 305]
    docs = []
    for uid in due_users:
        # expires 10 s before tick_at: due; the second pass is not
        passes = [
            a_pass("USING", tick_at - now - timedelta(seconds=10), first_use="x", now=now),
            a_pass("USABLE", timedelta(hours=5), now=now),
        ]
        docs.append(a_user(uid, passes, next_check_at=tick_at - timedelta(seconds=10)))
    for uid in later_users:
        passes = [a_pass("USABLE", timedelta(hours=2), now=now)]
        # Evaluated before (the service's marker is set): not due until next_check_at.
        docs.append(
            a_user(uid, passes, next_check_at=now + timedelta(hours=2), pass_status_checked_at=now)
        )
    # One document the service never evaluated (no next_check_at): read once, then due later.
    docs.append(a_user(401, [a_pass("USABLE", timedelta(seconds=10), now=now)]))
    await cache.insert_many(docs)

    process = ConsumerProcess(service_env).start()
    consumers.append(process)
    await produce_json(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [tick("due", at=tick_at)],
        key_field="shard",
    )
    sweep = process.wait_for("sweep_completed", timeout=60)[0]
    assert sweep["documents_read"] == 4  # 3 due + 1 never evaluated; 5 not read
    assert sweep["transitions"] == 4

    changes = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=4)
    )
    assert sorted((c["user_id"], c["status_log"]) for c in changes) == [
        (201, "USING -> EXPIRED"),
        (202, "USING -> EXPIRED"),
        (203, "USING -> EXPIRED"),
        (401, "USABLE -> EXPIRED"),
    ]
    for change in changes:
        assert change["cause"]["type"] == "tick"
        schemas.validator(schemas.PASS_STATUS_CHANGED)(change)
    async for doc in cache.find({}):
        statuses = [p["status"] for p in doc["passes"]]
        if doc["user_id"] in due_users:
            assert statuses == ["EXPIRED", "USABLE"]
            assert doc["next_check_at"] > tick_at  # the USABLE pass, 5 h away
        elif doc["user_id"] == 401:
            assert statuses == ["EXPIRED"]
            assert doc["next_check_at"] == NEVER_DUE  # every pass terminal
        else:
            assert statuses == ["USABLE"]

    # A second tick at the same instant finds nothing due.
    await produce_json(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [tick("due", at=tick_at)],
        key_field="shard",
    )
    second = process.wait_for("sweep_completed", timeout=60, count=2)[1]
    assert second["documents_read"] == 0
    assert process.stop() == 0


async def test_full_dry_run_logs_without_changing_then_apply_changes_and_logs(
    service_env: ServiceEnv,
    cache: Collection,
    check_logs: Collection,
    consumers: list[ConsumerProcess],
) -> None:
    settings = service_env.settings
    now = datetime.now(UTC)
    expired = a_pass("USABLE", timedelta(minutes=-5), now=now)
    using = a_pass("USABLE", timedelta(hours=1), first_use="2024-05-01 10:00:00", now=now)
    bad = a_pass("USABLE", now=now)
    bad["payload"]["expiration"] = "someday"
    await cache.insert_many(
        [
            a_user(12, [expired, using, bad]),
            a_user(11, [a_pass("EXPIRED", timedelta(days=-1), now=now)]),
        ]
    )
    process = ConsumerProcess(service_env).start()
    consumers.append(process)

    await produce_json(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [tick("full", at=now, apply=False)],
        key_field="user_id",
    )
    process.wait_for("sweep_completed", timeout=60)
    logs = [d async for d in check_logs.find({})]
    assert len(logs) == 1
    dry = logs[0]
    assert dry["editMode"] is False
    assert dry["check_userID"] == "all users"
    assert dry["log"] == [
        {
            "user_id": 12,
            "invalid_list": [
                {"pass_uuid": expired["pass_uuid"], "status_log": "USABLE -> EXPIRED"},
                {"pass_uuid": using["pass_uuid"], "status_log": "USABLE -> USING"},
            ],
            "skipped_list": [
                {
                    "pass_uuid": bad["pass_uuid"],
                    "reason": dry["log"][0]["skipped_list"][0]["reason"],
                }
            ],
        }
    ]
    assert "someday" in dry["log"][0]["skipped_list"][0]["reason"]
    doc = await cache.find_one({"user_id": 12})
    assert doc is not None
    assert [p["status"] for p in doc["passes"]] == ["USABLE", "USABLE", "USABLE"]

    await produce_json(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [tick("full", at=now, apply=True, user_id=12)],
        key_field="user_id",
    )
    process.wait_for("sweep_completed", timeout=60, count=2)
    applied = await check_logs.find_one({"editMode": True})
    assert applied is not None
    assert applied["check_userID"] == 12
    assert [e["user_id"] for e in applied["log"]] == [12]
    doc = await cache.find_one({"user_id": 12})
    assert doc is not None
    assert [p["status"] for p in doc["passes"]] == ["EXPIRED", "USING", "USABLE"]

    published = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_check_log, expect=2)
    )
    validate = schemas.validator(schemas.CHECK_LOG)
    for document in published:
        validate(document)
    assert sorted(d["editMode"] for d in published) == [False, True]
    assert process.stop() == 0


async def test_a_full_sweep_killed_halfway_resumes_on_the_next_owner_without_rereading(
    service_env: ServiceEnv,
    cache: Collection,
    check_logs: Collection,
    consumers: list[ConsumerProcess],
) -> None:
    users = 600
    env = service_env.with_overrides(sweep_batch_size="30", user_concurrency="4")
    settings = env.settings
    now = datetime.now(UTC)
    await cache.insert_many(
        [a_user(u, [a_pass("USABLE", timedelta(minutes=-1), now=now)]) for u in range(1, users + 1)]
    )
    first = ConsumerProcess(env, name="first").start()
    consumers.append(first)
    await produce_json(
        settings.kafka_bootstrap_servers, settings.topic_tick, [tick("full", at=now)], "user_id"
    )
    # Killed (no shutdown, no commit) once half the users are checkpointed.
    deadline = datetime.now(UTC) + timedelta(seconds=240)
    while True:
        done = [c["last_user_id"] for c in first.events("sweep_checkpoint")]
        if done and done[-1] >= users // 2:
            break
        assert datetime.now(UTC) < deadline, "\n".join(first.raw[-30:])
        await asyncio.sleep(0.05)
    first.kill()
    checkpointed = max(c["last_user_id"] for c in first.events("sweep_checkpoint"))
    assert checkpointed < users  # it was interrupted, not finished

    second = ConsumerProcess(env, name="second").start()
    consumers.append(second)
    [sweep] = second.wait_for("sweep_completed", timeout=180)
    [resumed] = second.events("sweep_resumed")
    assert resumed["after_user_id"] == checkpointed
    # Only the users after the checkpoint are read again.
    assert sweep["documents_read"] == users - checkpointed
    assert await cache.count_documents({"passes.status": "EXPIRED"}) == users
    # Every user once, also those written after the last checkpoint, before the kill.
    listed = [e["user_id"] async for d in check_logs.find({}) for e in d["log"]]
    assert sorted(listed) == list(range(1, users + 1))
    assert second.stop() == 0
