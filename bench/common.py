"""Shared helpers of the benchmarks: names, seeding, producing, offsets, processes, stats."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from consumer.domain.times import format_instant
from pymongo import AsyncMongoClient

REPO = Path(__file__).resolve().parents[1]
Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Kafka and MongoDB are."""

    bootstrap: str
    mongodb_uri: str


def endpoints_from_env() -> Endpoints:
    return Endpoints(
        os.environ.get("PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        os.environ.get("PASS_STATUS_MONGODB_URI", "mongodb://127.0.0.1:27017"),
    )


def unique_prefix(kind: str) -> str:
    return f"bench_{kind}_{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Names:
    """Topics, database and group of one isolated deployment."""

    prefix: str
    ticket_used: str
    tick: str
    status_changed: str
    check_log: str
    dead_letter: str

    @classmethod
    def of(cls, prefix: str, ticket_used: str | None = None) -> Names:
        return cls(
            prefix,
            ticket_used or f"{prefix}.ticket-used",
            f"{prefix}.tick",
            f"{prefix}.status-changed",
            f"{prefix}.check-log",
            f"{prefix}.dead-letter",
        )

    @property
    def outputs(self) -> list[str]:
        return [self.tick, self.status_changed, self.check_log, self.dead_letter]

    def env(self, ep: Endpoints, **extra: str) -> dict[str, str]:
        """The PASS_STATUS_* environment: defaults except names (and ``extra``)."""
        env = {
            "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": ep.bootstrap,
            "PASS_STATUS_MONGODB_URI": ep.mongodb_uri,
            "PASS_STATUS_MONGODB_DATABASE": self.prefix,
            "PASS_STATUS_GROUP_ID": self.prefix,
            "PASS_STATUS_HTTP_HOST": "127.0.0.1",
            "PASS_STATUS_HTTP_PORT": "0",
            "PASS_STATUS_TOPIC_TICKET_USED": self.ticket_used,
            "PASS_STATUS_TOPIC_TICK": self.tick,
            "PASS_STATUS_TOPIC_STATUS_CHANGED": self.status_changed,
            "PASS_STATUS_TOPIC_CHECK_LOG": self.check_log,
            "PASS_STATUS_TOPIC_DEAD_LETTER": self.dead_letter,
        }
        env.update({f"PASS_STATUS_{k.upper()}": v for k, v in extra.items()})
        return env


# -- Kafka ---------------------------------------------------------------------------


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="pass-status-bench")
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
        deadline = time.monotonic() + 30
        while True:
            described: list[dict[str, Any]] = await admin.describe_topics(list(names))
            if all(
                t.get("error_code") == 0
                and len(t.get("partitions", [])) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have no leaders")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="pass-status-bench")
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    except Exception as exc:  # noqa: BLE001 - cleanup only
        print(f"could not delete topics: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )


async def produce_all(bootstrap: str, topic: str, events: Iterable[Mapping[str, Any]]) -> float:
    """Produce every event (key: user_id) as fast as possible; returns seconds taken."""
    producer = _producer(bootstrap)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for e in events:
            futures.append(
                await producer.send(topic, orjson.dumps(e), key=str(e["user_id"]).encode())
            )
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def produce_paced(
    bootstrap: str, topic: str, events: Sequence[Mapping[str, Any]], rate: float
) -> tuple[float, float]:
    """Produce ``events`` at ``rate`` per second (10 ms ticks); returns (seconds, achieved rate)."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        sent = 0
        while sent < len(events):
            due = min(len(events), int((time.perf_counter() - started) * rate) + 1)
            futures.extend(
                [
                    await producer.send(topic, orjson.dumps(e), key=str(e["user_id"]).encode())
                    for e in events[sent:due]
                ]
            )
            sent = max(sent, due)
            await asyncio.sleep(0.01)
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return elapsed, len(events) / elapsed


async def committed_total(admin: Any, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int, wait: float) -> list[Any]:
    """Every record of ``topic`` from the start; stops at ``expect`` records or after ``wait`` s."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + wait
        idle_since = time.monotonic()
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            got = sum(len(m) for m in batch.values())
            for msgs in batch.values():
                records.extend(msgs)
            if got:
                idle_since = time.monotonic()
            elif expect == 0 and time.monotonic() - idle_since > 1:
                break
        return records
    finally:
        await consumer.stop()


# -- MongoDB -------------------------------------------------------------------------


def pass_uuid(user_id: int, index: int) -> str:
    return str(uuid.UUID(int=(user_id << 8) | index))


def a_pass(user_id: int, index: int, expiration: datetime) -> Document:
    """One pass in the shape of the cache (tests/integration/factories.py)."""
    uid = pass_uuid(user_id, index)
    return {
        "pass_uuid": uid,
        "status": "USABLE",
        "timestamp": 1700000000,
        "free_ticket_status": "none",
        "payload_hash": "h-" + uid[:8],
        "payload": {
            "uuid": uid,
            "status": "USABLE",
            "expiration": format_instant(expiration),
            "first_use": None,
            "allowed_uses": 1,
            "uses_count": 0,
            "time_created": "2024-01-01T00:00:00.000Z",
            "vendor_extra": {"zone": "A", "fare": 2.75},
        },
    }


def a_user(user_id: int, now: datetime, *, due: bool = False) -> Document:
    """A user with 3 USABLE passes; ``due``: one already expired and ``next_check_at`` past.

    Not due: ``next_check_at`` is set to the earliest expiration and the evaluated marker
    ``pass_status_checked_at`` is set, as this service leaves them (a document without
    the marker has never been evaluated, and is due).
    """
    expirations = [now + timedelta(days=30 + i) for i in range(3)]
    if due:
        expirations[0] = now - timedelta(hours=1)
    doc: Document = {
        "user_id": user_id,
        "timestamp": 1700000000,
        "passes": [a_pass(user_id, i, exp) for i, exp in enumerate(expirations)],
        "passes4": [{"legacy": True}],
        "passesLog": [],
        "passes4Log": [],
        "next_check_at": min(expirations),
        "pass_status_checked_at": now - timedelta(hours=2),
    }
    return doc


def mongo_client(uri: str) -> AsyncMongoClient[Document]:
    # A socket timeout, so that a server that stops answering (FerretDB 1.24 can deadlock:
    # docs/architecture.md) fails the benchmark instead of hanging it; long enough for a
    # full scan of the largest collection benchmarked.
    return AsyncMongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=10_000, socketTimeoutMS=600_000
    )


async def seed_users(
    uri: str,
    database: str,
    collection: str,
    users: int,
    *,
    due_every: int = 0,
    batch: int = 1000,
    parallel: int = 2,
) -> float:
    """Insert ``users`` documents (ids 1..users); every ``due_every``-th is due. Returns seconds."""
    client = mongo_client(uri)
    coll = client[database][collection]
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        await coll.create_index("user_id", name="user_id_1")
        sem = asyncio.Semaphore(parallel)

        async def insert(first: int) -> None:
            async with sem:
                docs = [
                    a_user(u, now, due=bool(due_every) and u % due_every == 0)
                    for u in range(first, min(users, first + batch - 1) + 1)
                ]
                await coll.insert_many(docs, ordered=False)

        await asyncio.gather(*(insert(first) for first in range(1, users + 1, batch)))
    finally:
        await client.close()
    return time.perf_counter() - started


async def drop_database(uri: str, database: str) -> None:
    client = mongo_client(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


# -- processes -----------------------------------------------------------------------


_WATCHED = ("partitions_assigned", "http_server_started", "pipeline_done", "sweep_completed")


@dataclass
class Pipeline:
    """A pipeline (the consumer, or a baseline) as a child process; its key log lines kept."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    log_path: Path | None = None
    transient_faults: int = 0  # "transient_fault" log lines (e.g. SQLITE_BUSY from FerretDB)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = 90) -> Pipeline:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("partitions_assigned", timeout)
        return self

    def _read(self) -> None:
        if self.proc is None or self.proc.stderr is None:
            return
        sink = self.log_path.open("ab") if self.log_path else None
        for raw in self.proc.stderr:
            if sink is not None:
                sink.write(raw)
            text = raw.decode(errors="replace").rstrip("\n")
            self.tail = [*self.tail[-30:], text]
            if '"transient_fault"' in text:
                self.transient_faults += 1
            if not any(w in text for w in _WATCHED):
                continue
            try:
                entry = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("event") in _WATCHED:
                self.seen.setdefault(str(entry["event"]), (time.time(), entry))
        if sink is not None:
            sink.close()

    def wait_for(self, event: str, timeout: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if event in self.seen:
                return self.seen[event]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode}:\n" + "\n".join(self.tail)
                )
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: no {event!r} within {timeout}s:\n" + "\n".join(self.tail))

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    def metrics_text(self) -> str:
        entry = self.seen.get("http_server_started")
        if entry is None:
            return ""
        port = int(entry[1]["port"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return bytes(resp.read()).decode()

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current), 0 if unknown."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_pids() -> dict[str, int]:
    """PIDs of the local Kafka and FerretDB started by ``scripts/services`` (if any)."""
    state = Path(os.environ.get("PASS_STATUS_STATE", REPO / ".local" / "services"))
    found: dict[str, int] = {}
    for name in ("kafka", "ferretdb"):
        pidfile = state / name / f"{name}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            found[name] = pid
    return found


def prometheus_sum(text: str, metric: str) -> float:
    """Sum of every sample of ``metric`` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
