"""Run pass-status locally with demo traffic and print status changes as they happen.

    make demo            # services up, then this script
    uv run python scripts/demo.py [--users 20] [--duration SECONDS]

Creates the topics, seeds demo users (ids from 900001) into the cache collection, starts
``python -m consumer run`` as a child process, publishes ticket-used events and a ``due``
tick every few seconds, and prints every pass-status-changed event. Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consumer import logs
from consumer.adapters.kafka import connection_options
from consumer.adapters.mongo import make_client
from consumer.app import tick_events
from consumer.commands import load_settings
from consumer.domain.times import format_instant
from consumer.settings import Settings

from create_topics import apply_spec, load_spec

FIRST_USER = 900001


def demo_user(user_id: int, now: datetime) -> dict[str, Any]:
    def a_pass(status: str, expires_in: timedelta, first_use: str | None) -> dict[str, Any]:
        pass_uuid = str(uuid.uuid4())
        return {
            "pass_uuid": pass_uuid,
            "status": status,
            "timestamp": int(now.timestamp()),
            "free_ticket_status": 0,
            "payload_hash": uuid.uuid4().hex,
            "payload": {
                "uuid": pass_uuid,
                "status": status,
                "expiration": format_instant(now + expires_in),
                "first_use": first_use,
                "allowed_uses": 1,
                "uses_count": 0,
                "time_created": format_instant(now - timedelta(days=1)),
            },
        }

    return {
        "user_id": user_id,
        "timestamp": int(now.timestamp()),
        "passes": [
            a_pass("USABLE", timedelta(minutes=30), None),
            a_pass("USABLE", timedelta(seconds=random.randint(20, 120)), None),
            a_pass("USING", timedelta(seconds=random.randint(10, 90)), format_instant(now)),
        ],
        "passes4": [],
        "passesLog": [],
        "passes4Log": [],
    }


async def seed(settings: Settings, users: int) -> list[dict[str, Any]]:
    client = make_client(settings)
    try:
        collection = client[settings.mongodb_database][settings.collection_cache]
        ids = list(range(FIRST_USER, FIRST_USER + users))
        await collection.delete_many({"user_id": {"$in": ids}})
        now = datetime.now(UTC)
        docs = [demo_user(uid, now) for uid in ids]
        await collection.insert_many(docs)
        return docs
    finally:
        await client.close()


async def print_changes(settings: Settings, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_status_changed, auto_offset_reset="latest", **connection_options(settings)
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                for message in messages:
                    e = orjson.loads(message.value)
                    print(
                        f"{e['detected_at']}  user {e['user_id']}  pass {e['pass_uuid'][:8]}  "
                        f"{e['status_log']:<18} cause={e['cause']['type']}",
                        flush=True,
                    )
    finally:
        await consumer.stop()


async def traffic(settings: Settings, docs: list[dict[str, Any]], stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(acks="all", **connection_options(settings))
    await producer.start()
    unused = [(d["user_id"], p["pass_uuid"]) for d in docs for p in d["passes"][:1]]
    random.shuffle(unused)
    seconds = 0
    try:
        while not stop.is_set():
            if unused and seconds % 2 == 0:
                user_id, pass_uuid = unused.pop()
                event = {
                    "event_id": str(uuid.uuid4()),
                    "user_id": user_id,
                    "pass_uuid": pass_uuid,
                    "used_at": format_instant(datetime.now(UTC)),
                }
                await producer.send_and_wait(
                    settings.topic_ticket_used, orjson.dumps(event), key=str(user_id).encode()
                )
            if seconds % 5 == 0:
                for key, body in tick_events(
                    "due", None, True, settings.tick_shards, datetime.now(UTC)
                ):
                    await producer.send_and_wait(settings.topic_tick, orjson.dumps(body), key=key)
            seconds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
    finally:
        await producer.stop()


async def main_async(args: argparse.Namespace) -> int:
    settings = load_settings()
    # The demo's own Kafka clients: warnings as JSON lines (a leader move is one structured
    # warning, consumer.kafka_log_events), never aiokafka's free text on the terminal.
    logs.configure("WARNING", settings.secrets())
    await apply_spec(settings, load_spec(settings, "local"))
    docs = await seed(settings, args.users)
    print(f"seeded {len(docs)} demo users from {FIRST_USER}; starting the consumer", flush=True)
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
        [sys.executable, "-m", "consumer", "run"],
        env={**os.environ, "PASS_STATUS_CHECK_LOG_INTERVAL_SECONDS": "10"},
        stderr=Path(args.consumer_log).open("ab"),  # noqa: SIM115, ASYNC230 - handed to the child process
    )
    print(f"consumer pid {child.pid}, its JSON logs in {args.consumer_log}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    tasks = [
        asyncio.create_task(print_changes(settings, stop)),
        asyncio.create_task(traffic(settings, docs, stop)),
    ]
    await stop.wait()
    await asyncio.gather(*tasks)
    child.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(child.wait, 60)
    print(f"consumer stopped with exit code {code}", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description="pass-status demo with local traffic")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C)"
    )
    parser.add_argument("--consumer-log", default=".local/demo-consumer.log")
    args = parser.parse_args()
    Path(args.consumer_log).parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
