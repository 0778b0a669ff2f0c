"""Building blocks of the fault scenarios: seeded users, continuous traffic, a concurrent
writer, dedicated local servers that a test may stop, and the final comparison."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import subprocess
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from consumer.adapters.mongo_outbox import RELAYS_COLLECTION
from consumer.domain.watermarks import Watermark
from consumer.errors import MessageTooLargeError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from tests.conftest import REPO, SERVICES_SCRIPT
from tests.faults.checker import Expected, Report, check, expected_outcome, fmt, parse_time
from tests.integration.factories import a_pass, a_user
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    all_topics,
    read_topic,
    service_environment,
)

Document = dict[str, Any]
FIGURES_FILE = REPO / ".local" / "reliability-last.json"
LOG_DIR = REPO / ".local" / "faults"
# Users per scenario (each ~4 passes, ~4 ticket-used events): PASS_STATUS_FAULTS_USERS.
SCALE_USERS = int(os.environ.get("PASS_STATUS_FAULTS_USERS", "120"))
FAR_FUTURE = timedelta(days=30)
LONG_AGO = timedelta(days=2)
# Expiring passes expire this long after the seeding: their ticket-used events go first, so
# that (unless a fault delays them) they turn USING, then a due tick turns them EXPIRED
# during the run: the per-pass order check of the checker gets two events to compare.
EXPIRING_AFTER = timedelta(seconds=12)


# --------------------------------------------------------------------------- seeds, events


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_seeds(rng: random.Random, users: int, first_user_id: int, now: datetime) -> list[Document]:
    """Users with passes whose outcome does not depend on timing (see checker)."""
    seeds = []
    for user_id in range(first_user_id, first_user_id + users):
        passes: list[Document] = []

        def add(status: str, expires_in: timedelta, first_use: str | None = None) -> None:
            passes.append(a_pass(status, expires_in, first_use, now, _uuid(rng)))  # noqa: B023

        for _ in range(rng.randint(1, 2)):
            add("USABLE", FAR_FUTURE)
        if rng.random() < 0.5:
            add("USABLE", FAR_FUTURE + timedelta(days=1))  # idle: never used
        if rng.random() < 0.5:
            add("USING", FAR_FUTURE, fmt(now - timedelta(hours=3)))
        if rng.random() < 0.4:
            add("USABLE", -LONG_AGO)
        if rng.random() < 0.3:
            add("USING", -LONG_AGO, fmt(now - timedelta(days=3)))
        if rng.random() < 0.2:
            add(rng.choice(["EXPIRED", "USES_GONE"]), -LONG_AGO)
        if rng.random() < 0.25:
            add("USABLE", EXPIRING_AFTER)  # used, then expired, during the run
        rng.shuffle(passes)
        seeds.append(a_user(user_id, passes))
    return seeds


def plan_ticket_used(rng: random.Random, seeds: list[Document], now: datetime) -> list[Document]:
    """Ticket-used events for the seeded passes (several per pass, distinct ``used_at``);
    those of expiring passes first (each shuffled)."""
    events: list[Document] = []
    expiring: list[Document] = []
    for seed in seeds:
        for item in seed["passes"]:
            idle = item["payload"]["expiration"] > fmt(now + FAR_FUTURE + timedelta(hours=12))
            if idle:
                continue
            soon = now < parse_time(item["payload"]["expiration"]) <= now + timedelta(hours=1)
            count = rng.randint(1, 3) if item["status"] == "USABLE" else rng.randint(0, 1)
            for _ in range(count):
                used_at = now - timedelta(
                    seconds=rng.randint(1, 7200), milliseconds=rng.randint(0, 999)
                )
                (expiring if soon else events).append(
                    {
                        "event_id": _uuid(rng),
                        "user_id": seed["user_id"],
                        "pass_uuid": item["pass_uuid"],
                        "used_at": fmt(used_at),
                    }
                )
    rng.shuffle(expiring)
    rng.shuffle(events)
    return [*expiring, *events]


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """Produces the planned events at a steady rate, with due ticks now and then and one
    full tick half-way; survives a broker outage by retrying (a retried batch may land
    twice on the topic: harmless, the model reads what is on the topic)."""

    bootstrap: str
    service: ServiceEnv
    events: list[Document]
    seconds: float
    tick_every: float = 4.0
    oversized_fraction: float = 0.0
    oversized_bytes: int = 200_000
    sent: int = 0
    oversized_sent: int = 0
    ticks_sent: int = 0
    send_failures: int = 0
    recent_users: deque[int] = field(default_factory=lambda: deque(maxlen=50))
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    async def run(self) -> None:
        settings = self.service.settings
        chunk = max(1, len(self.events) // max(1, int(self.seconds * 4)))
        started = time.monotonic()
        next_tick = started + 1.0
        full_sent = False
        producer = await self._producer()
        try:
            for offset in range(0, len(self.events), chunk):
                batch = self.events[offset : offset + chunk]
                records = [
                    (settings.topic_ticket_used, str(e["user_id"]).encode(), orjson.dumps(e))
                    for e in batch
                ]
                records += self._oversized(batch)
                now = time.monotonic()
                if now >= next_tick:
                    records.append(self._tick(settings.topic_tick, "due"))
                    next_tick = now + self.tick_every
                    self.ticks_sent += 1
                if not full_sent and offset >= len(self.events) // 2:
                    records.append(self._tick(settings.topic_tick, "full"))
                    full_sent = True
                    self.ticks_sent += 1
                producer = await self._send(producer, records)
                self.sent += len(batch)
                self.recent_users.extend(e["user_id"] for e in batch)
                target = started + self.seconds * (offset + chunk) / len(self.events)
                await asyncio.sleep(max(0.0, target - time.monotonic()))
            producer = await self._send(producer, [self._tick(settings.topic_tick, "due")])
            self.ticks_sent += 1
        finally:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def final_tick(self) -> None:
        producer = await self._producer()
        try:
            producer = await self._send(
                producer, [self._tick(self.service.settings.topic_tick, "due")]
            )
            self.ticks_sent += 1
        finally:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    def _oversized(self, batch: list[Document]) -> list[tuple[str, bytes, bytes]]:
        """About ``oversized_fraction`` of the batch again as inputs over the service's input
        limit: valid JSON of a real user, padded (poison: dead-lettered as too large)."""
        out = []
        for event in batch:
            if self._rng.random() < self.oversized_fraction:
                body = {
                    **event,
                    "event_id": str(uuid.uuid4()),
                    "padding": "x" * self.oversized_bytes,
                }
                key = str(event["user_id"]).encode()
                out.append((self.service.settings.topic_ticket_used, key, orjson.dumps(body)))
        self.oversized_sent += len(out)
        return out

    @staticmethod
    def _tick(topic: str, mode: str) -> tuple[str, bytes, bytes]:
        body = {"event_id": str(uuid.uuid4()), "tick_at": fmt(datetime.now(UTC)), "mode": mode}
        return topic, b"0", orjson.dumps(body)

    async def _producer(self) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=10000,
            )
            try:
                await producer.start()
            except KafkaError:
                self.send_failures += 1
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                await asyncio.sleep(1.0)
                continue
            return producer

    async def _send(
        self, producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes]]
    ) -> AIOKafkaProducer:
        while True:
            try:
                futures = [await producer.send(t, v, key=k) for t, k, v in records]
                await asyncio.gather(*futures)
            except KafkaError:
                self.send_failures += 1
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                await asyncio.sleep(1.0)
                producer = await self._producer()
                continue
            return producer


@dataclass
class ForeignWriter:
    """Rewrites users' ``passes`` as the refresher does, with the same passes: bumps a pass's
    ``timestamp`` in place, or re-writes the whole array (conditionally, like a careful
    refresher) with every ``timestamp`` bumped."""

    mongodb_uri: str
    service: ServiceEnv
    user_ids: list[int]
    recent_users: deque[int]
    rng: random.Random
    writes: int = 0
    errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            self.mongodb_uri, serverSelectionTimeoutMS=3000
        )
        settings = self.service.settings
        cache = client[settings.mongodb_database][settings.collection_cache]
        try:
            while not stop.is_set():
                pool = list(self.recent_users) or self.user_ids
                user_id = self.rng.choice(pool)
                try:
                    if self.rng.random() < 0.5:
                        doc = await cache.find_one({"user_id": user_id}, {"passes": 1})
                        if doc and doc.get("passes"):
                            index = self.rng.randrange(len(doc["passes"]))
                            await cache.update_one(
                                {"user_id": user_id},
                                {"$inc": {f"passes.{index}.timestamp": 1, "timestamp": 1}},
                            )
                    else:
                        doc = await cache.find_one({"user_id": user_id})
                        if doc and isinstance(doc.get("passes"), list):
                            rewritten = [
                                {**p, "timestamp": int(p.get("timestamp", 0)) + 1}
                                for p in doc["passes"]
                            ]
                            await cache.update_one(
                                {"_id": doc["_id"], "passes": doc["passes"]},
                                {"$set": {"passes": rewritten}, "$inc": {"timestamp": 1}},
                            )
                    self.writes += 1
                except PyMongoError:
                    self.errors += 1
                await asyncio.sleep(0.01)
        finally:
            await client.close()


# --------------------------------------------------------------------------- deployment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    """One Kafka broker or one FerretDB of a test's own, started by scripts/services with
    a state directory of its own, so the test may stop and restart it."""

    kind: str  # "kafka" or "mongodb"
    state: Path
    other: str  # the address of the service of the other kind (used, not started)
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

    @property
    def address(self) -> str:
        if self.kind == "kafka":
            return f"127.0.0.1:{self.port}"
        return f"mongodb://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS", "PASS_STATUS_MONGODB_URI"}
        }
        env["PASS_STATUS_STATE"] = str(self.state)
        if self.kind == "kafka":
            env["PASS_STATUS_MONGODB_URI"] = self.other
            env["PASS_STATUS_LOCAL_KAFKA_PORT"] = str(self.port)
            env["PASS_STATUS_LOCAL_KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
            env["PASS_STATUS_LOCAL_KAFKA_HEAP"] = "384m"
        else:
            env["PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"] = self.other
            env["PASS_STATUS_LOCAL_MONGODB_PORT"] = str(self.port)
        return env

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(SERVICES_SCRIPT), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services {' '.join(args)} failed:\n{done.stderr}")

    def up(self) -> float:
        """Start (or restart) it and wait until ready; returns the seconds it took."""
        started = time.monotonic()
        self._run("up")
        return time.monotonic() - started

    def down(self) -> None:
        self._run("down")

    def wipe(self) -> None:
        self._run("down", "--wipe")


@contextlib.contextmanager
def local_server(kind: str, state: Path, other: str) -> Iterator[LocalServer]:
    server = LocalServer(kind, state, other)
    server.up()
    try:
        yield server
    finally:
        server.wipe()


async def _wait_for_leaders(admin: Any, names: list[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        ready = [
            t
            for t in described
            if t.get("error_code") == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
        ]
        if len(ready) == len(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} have no leaders")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def deployment(
    prefix: str, bootstrap: str, mongodb_uri: str, *, replication_factor: int = 1, **extra: str
) -> AsyncIterator[ServiceEnv]:
    """Topics (3 partitions each; on a cluster, replication factor 3 and min.insync.replicas
    2 as in production) and a database of one scenario, removed afterwards."""
    # FerretDB on SQLite serialises writes (a few hundred per second at best, a handful on
    # a loaded 2-core machine): few concurrent users keep each operation under its timeout.
    extra = {"user_concurrency": "4", **extra}
    service = service_environment(prefix, bootstrap, mongodb_uri, **extra)
    topics = all_topics(service.settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"min.insync.replicas": str(min(2, replication_factor))}
        await admin.create_topics(
            [NewTopic(t, 3, replication_factor, topic_configs=configs) for t in topics]
        )
        await _wait_for_leaders(admin, topics)
    finally:
        await admin.close()
    try:
        yield service
    finally:
        with contextlib.suppress(KafkaError, OSError):
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.delete_topics(topics)
            finally:
                await admin.close()
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            mongodb_uri, serverSelectionTimeoutMS=5000
        )
        with contextlib.suppress(PyMongoError):
            await client.drop_database(service.settings.mongodb_database)
        await client.close()


async def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic``, by partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


# --------------------------------------------------------------------------- the scenario


@dataclass
class Scenario:
    """Seeds, traffic plan and the final comparison of one fault scenario."""

    name: str
    service: ServiceEnv
    bootstrap: str
    mongodb_uri: str
    seed: int
    users: int = SCALE_USERS
    traffic_seconds: float = 40.0
    rng: random.Random = field(init=False)
    seeds: list[Document] = field(default_factory=list)
    events: list[Document] = field(default_factory=list)
    seeded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    consumers: list[ConsumerProcess] = field(default_factory=list)
    traffic: Traffic | None = None
    # Poison (tests/faults/poison.py): users whose documents the store refuses to write,
    # and the traffic's share of inputs over the service's input limit.
    poisoned: set[int] = field(default_factory=set)
    oversized_fraction: float = 0.0
    # Where the poison landed on the input topic, read back from it (a retried send may land
    # a record twice, so the producer's count is not the truth): (partition, offset) pairs.
    oversized_at: set[tuple[int, int]] = field(default_factory=set)
    poisoned_at: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def seed_documents(self) -> None:
        self.seeded_at = datetime.now(UTC)
        self.seeds = make_seeds(self.rng, self.users, 1000, self.seeded_at)
        self.events = plan_ticket_used(self.rng, self.seeds, self.seeded_at)
        client: AsyncMongoClient[Document] = AsyncMongoClient(self.mongodb_uri)
        settings = self.service.settings
        try:
            await client[settings.mongodb_database][settings.collection_cache].insert_many(
                [
                    {**s, "pass_status_rev": "not a number"}
                    if s["user_id"] in self.poisoned
                    else dict(s)
                    for s in self.seeds
                ]
            )
        finally:
            await client.close()
        for seed in self.seeds:
            seed.pop("_id", None)

    def consumer(self, name: str, **overrides: str) -> ConsumerProcess:
        service = self.service.with_overrides(**overrides) if overrides else self.service
        process = ConsumerProcess(service, name=name)
        self.consumers.append(process)
        return process

    def spawn(self, name: str) -> ConsumerProcess:
        """Start a consumer process without waiting for it to join (under load, joining can
        take long; a kill or stop during start-up is one more random moment)."""
        process = self.consumer(name)
        with contextlib.suppress(AssertionError):  # "not started within 0 s"
            process.start(wait_assigned=False, timeout=0)
        return process

    def start_traffic(self) -> asyncio.Task[None]:
        self.traffic = Traffic(
            self.bootstrap,
            self.service,
            self.events,
            self.traffic_seconds,
            oversized_fraction=self.oversized_fraction,
        )
        return asyncio.create_task(self.traffic.run())

    def kill_all(self) -> None:
        """Kill what still runs; keep every consumer's log in .local/faults/<scenario>/."""
        folder = LOG_DIR / self.name
        folder.mkdir(parents=True, exist_ok=True)
        for number, process in enumerate(self.consumers):
            if process.proc is not None and process.proc.poll() is None:
                process.kill()
            (folder / f"{number:03d}-{process.name}.log").write_text("\n".join(process.raw))

    async def documents(self) -> list[Document]:
        client: AsyncMongoClient[Document] = AsyncMongoClient(self.mongodb_uri, tz_aware=True)
        settings = self.service.settings
        try:
            cache = client[settings.mongodb_database][settings.collection_cache]
            return await cache.find({}).to_list(None)
        finally:
            await client.close()

    async def watermarks(self) -> dict[int, Watermark]:
        """Every relay source's saved watermark: what its relays published."""
        client: AsyncMongoClient[Document] = AsyncMongoClient(self.mongodb_uri, tz_aware=True)
        try:
            relays = client[self.service.settings.mongodb_database][RELAYS_COLLECTION]
            return {
                d["_id"]: Watermark(d["through"], frozenset(d["unsettled"]))
                async for d in relays.find({})
            }
        finally:
            await client.close()

    async def _inputs(self) -> tuple[list[Document], list[Document]]:
        settings = self.service.settings
        assert self.traffic is not None
        # Every record sent, the oversized ones too: stopping at the good ones' count could
        # leave a partition's last fetch of large records unread.
        sent = self.traffic.sent + self.traffic.oversized_sent
        used = await read_topic(self.bootstrap, settings.topic_ticket_used, expect=sent, settle=0.5)
        ticks = await read_topic(
            self.bootstrap, settings.topic_tick, expect=self.traffic.ticks_sent, settle=0.5
        )
        used.sort(key=lambda r: (r.partition, r.offset))
        limit = settings.max_message_bytes
        self.oversized_at = {(r.partition, r.offset) for r in used if len(r.value) > limit}
        within = [(r, orjson.loads(r.value)) for r in used if len(r.value) <= limit]
        # The poisoned users' events are dead-lettered, never applied: outside the model.
        self.poisoned_at = {
            (r.partition, r.offset) for r, e in within if e["user_id"] in self.poisoned
        }
        valid = [e for _r, e in within if e["user_id"] not in self.poisoned]
        return valid, [orjson.loads(r.value) for r in ticks]

    async def converge(self, wait: float = 300) -> tuple[Expected, Report]:
        """Wait until MongoDB and the output topic match the model (or ``wait`` seconds), then
        return the model and the final comparison."""
        assert self.traffic is not None
        used, ticks = await self._inputs()
        planned = [e for e in self.events if e["user_id"] not in self.poisoned]
        assert len(used) >= len(planned), "the input topic lost produced events"
        seeds = [s for s in self.seeds if s["user_id"] not in self.poisoned]
        expected = expected_outcome(
            seeds, used, ticks, seeded_at=self.seeded_at, last_event_at=datetime.now(UTC)
        )
        settings = self.service.settings
        deadline = time.monotonic() + wait
        while True:
            docs_report = check(expected, await self.documents(), [], (), await self.watermarks())
            docs_done = not any("status" in x or "first_use" in x for x in docs_report.lost)
            if (docs_done and docs_report.pending_outbox == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        while True:
            published = await read_topic(
                self.bootstrap,
                settings.topic_status_changed,
                expect=len(expected.transitions),
                wait=5,
                settle=1.0,
            )
            published.sort(key=lambda r: (r.partition, r.offset))  # the per-pass order check
            report = check(
                expected,
                await self.documents(),
                [r.value for r in published],
                [d for d in await self._dead_letters() if not self.is_poison(d)],
                await self.watermarks(),
            )
            if report.ok or time.monotonic() > deadline:
                return expected, report
            await asyncio.sleep(1.0)

    def is_poison(self, dead_letter: bytes) -> bool:
        """A dead letter this scenario's poison should cause (checked by its test)."""
        body = orjson.loads(dead_letter)
        user = body.get("key_base64")
        key = base64.b64decode(user).decode() if user else ""
        if body["reason"] == "store_rejected":
            return key.isdigit() and int(key) in self.poisoned
        return body["reason"] == MessageTooLargeError.reason and self.oversized_fraction > 0

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter (large ones take more than a second to read)."""
        return [orjson.loads(d) for d in await self._dead_letters(wait=10)]

    async def _dead_letters(self, wait: float = 1) -> list[bytes]:
        records = await read_topic(
            self.bootstrap, self.service.settings.topic_dead_letter, wait=wait, settle=0
        )
        return [r.value for r in records]


def record_figures(scenario: str, figures: dict[str, Any]) -> None:
    """Merge one scenario's figures into .local/reliability-last.json (docs/reliability.md)."""
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(FIGURES_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data[scenario] = {**figures, "recorded_at": fmt(datetime.now(UTC))}
    FIGURES_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
