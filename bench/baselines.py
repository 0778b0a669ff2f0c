"""The two baselines the consumer is compared with, run as ``python -m bench.baselines KIND``.

- ``naive``: the old job's way, per event: read the user, apply the event and evaluate with
  the project's pure rules, write the document back, publish the status changes and wait
  for their acknowledgement, commit the event's offset. A straightforward, correct
  implementation (aiokafka + PyMongo's async client), one event at a time.
- ``passthrough``: consume, publish one small event per input, commit, batch by batch; no
  MongoDB at all. The Kafka-side ceiling of any pipeline on this machine.

Both read the same ``PASS_STATUS_*`` variables as the consumer (bootstrap, URI, database,
group, topics) and log JSON lines on stderr: ``partitions_assigned`` and, on SIGTERM,
``pipeline_done`` with the number of events processed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from consumer.domain.events import Cause, CauseType, status_changed_event
from consumer.domain.rules import evaluate_user
from consumer.domain.ticket_used import apply_ticket_used
from consumer.errors import DocumentError, InputError
from consumer.parsing import parse_ticket_used
from consumer.settings import Settings
from pymongo import AsyncMongoClient


def _log(event: str, **fields: Any) -> None:
    line = {"ts": datetime.now(UTC).isoformat(), "event": event, **fields}
    sys.stderr.write(orjson.dumps(line).decode() + "\n")
    sys.stderr.flush()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    async def on_partitions_revoked(self, revoked: set[Any]) -> None:  # noqa: ARG002
        return None

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        _log("partitions_assigned", partitions=len(assigned))


def _clients(settings: Settings) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
    )
    return consumer, producer


class _StoreOps:
    """MongoDB operations made, for the report's operations per event."""

    count = 0


async def naive(settings: Settings, stop: asyncio.Event) -> int:
    """One event at a time: read, evaluate, write, publish and wait, commit."""
    consumer, producer = _clients(settings)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    cache = client[settings.mongodb_database][settings.collection_cache]
    consumer.subscribe([settings.topic_ticket_used], listener=_Listener())
    await producer.start()
    await consumer.start()
    processed = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=1)
            for tp, messages in batch.items():
                for message in messages:
                    await _naive_one(settings, cache, producer, message)
                    await consumer.commit({tp: message.offset + 1})
                    processed += 1
    finally:
        await consumer.stop()
        await producer.stop()
        await client.close()
    return processed


async def _naive_one(
    settings: Settings, cache: Any, producer: AIOKafkaProducer, message: Any
) -> None:
    try:
        event = parse_ticket_used(message.value, settings.max_message_bytes)
    except InputError:
        return
    _StoreOps.count += 1
    doc = await cache.find_one({"user_id": event.user_id})
    if doc is None:
        return
    now = datetime.now(UTC)
    try:
        updated, first_use = apply_ticket_used(doc, event.pass_uuid, event.used_at)
        evaluation = evaluate_user(updated, now)
    except (InputError, DocumentError):
        return
    sets: dict[str, Any] = {}
    if first_use is not None:
        sets[f"passes.{first_use.index}.payload.first_use"] = first_use.first_use
    for t in evaluation.transitions:
        sets[f"passes.{t.index}.status"] = t.to_status
    if not sets:
        return
    _StoreOps.count += 1
    await cache.update_one({"_id": doc["_id"]}, {"$set": sets})
    cause = Cause(CauseType.TICKET_USED, event.event_id)
    for t in evaluation.transitions:
        body = status_changed_event(event.user_id, t, now, cause)
        await producer.send_and_wait(
            settings.topic_status_changed, orjson.dumps(body), key=str(event.user_id).encode()
        )


async def passthrough(settings: Settings, stop: asyncio.Event) -> int:
    """Batch by batch: publish one small event per input, wait for the acks, commit."""
    consumer, producer = _clients(settings)
    consumer.subscribe([settings.topic_ticket_used], listener=_Listener())
    await producer.start()
    await consumer.start()
    processed = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(
                timeout_ms=settings.fetch_timeout_ms, max_records=settings.max_batch_records
            )
            if not batch:
                continue
            futures = []
            for messages in batch.values():
                for message in messages:
                    data = orjson.loads(message.value)
                    body = {
                        "event_id": data["event_id"],
                        "user_id": data["user_id"],
                        "pass_uuid": data["pass_uuid"],
                    }
                    futures.append(
                        await producer.send(
                            settings.topic_status_changed, orjson.dumps(body), key=message.key
                        )
                    )
            await asyncio.gather(*futures)
            await consumer.commit({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()})
            processed += len(futures)
    finally:
        await consumer.stop()
        await producer.stop()
    return processed


async def _main(kind: str) -> int:
    import os  # noqa: PLC0415 - only the entry point reads the environment

    settings = Settings.from_env(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = naive if kind == "naive" else passthrough
    processed = await run(settings, stop)
    _log("pipeline_done", kind=kind, processed=processed, store_ops=_StoreOps.count)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in {"naive", "passthrough"}:
        sys.stderr.write("usage: python -m bench.baselines naive|passthrough\n")
        return 2
    return asyncio.run(_main(args[0]))


if __name__ == "__main__":
    sys.exit(main())
