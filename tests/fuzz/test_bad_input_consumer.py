"""Bad messages interleaved with valid ones through the running consumer: every bad one is
dead-lettered with the right reason, every valid one applied, the consumer never stops."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from consumer.errors import InputError
from consumer.parsing import parse_ticket_used
from pymongo.asynchronous.collection import AsyncCollection

from tests.faults.checker import fmt
from tests.faults.scenario import record_figures
from tests.fuzz.corpus import MAX_BYTES, TICK_CORPUS, TICKET_USED_CORPUS, generated_ticket_used
from tests.integration.factories import a_pass, a_user
from tests.integration.harness import ConsumerProcess, ServiceEnv, eventually, read_topic, values

pytestmark = pytest.mark.integration
Collection = AsyncCollection[dict[str, Any]]
Item = tuple[str, str, bytes | None, bytes | None, str]  # label, topic, key, value, reason


def _pure_reason(value: bytes) -> str:
    try:
        parse_ticket_used(value, MAX_BYTES)
    except InputError as exc:
        return exc.reason
    return "unknown_user"  # it parses; user 1 of the template is not seeded


async def _produce(bootstrap: str, items: list[Item]) -> dict[tuple[str, int, int], Item]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2**21)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for _l, t, k, v, _r in items]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(m.topic, m.partition, m.offset): item for m, item in zip(metas, items, strict=True)}


async def test_bad_input_is_dead_lettered_with_its_reason_and_valid_input_applied(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    now = datetime.now(UTC)
    rng = random.Random(4242)
    users = {
        uid: [a_pass("USABLE", timedelta(days=20), now=now) for _ in range(3)]
        for uid in range(500, 520)
    }
    await cache.insert_many([a_user(uid, passes) for uid, passes in users.items()])

    used, tick = settings.topic_ticket_used, settings.topic_tick
    items: list[Item] = []
    valid: dict[str, dict[str, Any]] = {}
    for uid, passes in users.items():
        for item in passes:
            event = {
                "event_id": str(uuid.uuid4()),
                "user_id": uid,
                "pass_uuid": item["pass_uuid"],
                "used_at": fmt(now - timedelta(minutes=rng.randint(1, 90))),
            }
            valid[item["pass_uuid"]] = event
            items.append(("valid", used, str(uid).encode(), orjson.dumps(event), "ok"))
    bad: list[Item] = [
        (f"corpus {label}", used, b"x", value, reason)
        for label, value, reason in TICKET_USED_CORPUS
    ]
    bad += [(f"tick {label}", tick, b"0", value, reason) for label, value, reason in TICK_CORPUS]
    bad += [
        (label, used, str(rng.randint(0, 10**6)).encode(), value, _pure_reason(value))
        for label, value, _reason in generated_ticket_used(seed=99, count=150)
    ]
    ghost = {"event_id": "g", "user_id": 999_999, "pass_uuid": "p", "used_at": fmt(now)}
    bad.append(("unknown user", used, b"999999", orjson.dumps(ghost), "unknown_user"))
    stranger = {**ghost, "user_id": 500, "pass_uuid": "no-such-pass"}
    bad.append(("unknown pass", used, b"500", orjson.dumps(stranger), "unknown_pass"))
    items += bad
    rng.shuffle(items)
    # Valid events of one pass keep their order: only one per pass here.
    sent = await _produce(settings.kafka_bootstrap_servers, items)

    process = ConsumerProcess(service_env).start()
    consumers.append(process)
    expected_dead = {k: v for k, v in sent.items() if v[4] != "ok"}
    dead = values(
        await read_topic(
            settings.kafka_bootstrap_servers,
            settings.topic_dead_letter,
            expect=len(expected_dead),
            wait=120,
            settle=2,
        )
    )
    got = {(d["source_topic"], d["source_partition"], d["source_offset"]): d for d in dead}
    assert len(dead) == len(got), "a bad record was dead-lettered twice"
    missing = [expected_dead[k][0] for k in expected_dead if k not in got]
    assert missing == [], f"bad records not dead-lettered: {missing}"
    unexpected = [got[k]["message"] for k in got if k not in expected_dead]
    assert unexpected == [], f"valid records dead-lettered: {unexpected}"
    wrong = [
        (expected_dead[k][0], expected_dead[k][4], d["reason"])
        for k, d in got.items()
        if d["reason"] != expected_dead[k][4]
    ]
    assert wrong == [], wrong
    for key, letter in got.items():
        raw = expected_dead[key][3]
        assert letter["value_base64"] == (None if raw is None else base64.b64encode(raw).decode())

    async def statuses() -> dict[str, tuple[str, Any]]:
        out = {}
        async for doc in cache.find({}):
            for p in doc["passes"]:
                out[p["pass_uuid"]] = (p["status"], p["payload"]["first_use"])
        return out

    final = await eventually(statuses, lambda s: all(v[0] == "USING" for v in s.values()), wait=120)
    assert {k: v[1] for k, v in final.items()} == {k: e["used_at"] for k, e in valid.items()}
    changes = values(
        await read_topic(
            settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=len(valid)
        )
    )
    assert {c["pass_uuid"] for c in changes} == set(valid)
    assert process.proc is not None
    assert process.proc.poll() is None, "the consumer stopped"
    assert process.stop() == 0
    by_reason = Counter(v[4] for v in expected_dead.values())
    record_figures(
        "bad_input",
        {
            "valid_events": len(valid),
            "bad_inputs": len(expected_dead),
            "by_reason": dict(by_reason),
        },
    )
