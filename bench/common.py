"""Shared helpers of the benchmarks: names, seeding, producing, offsets, processes, stats."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
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
from consumer.app import core
from consumer.domain.times import format_instant
from consumer.domain.user_update import CHECKED_AT, NEXT_CHECK_AT, stored_next_check_at
from consumer.settings import Settings
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "bytemark_tickets_cache"  # the service's default (Settings.collection_cache)
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


@functools.lru_cache(maxsize=64)
def _instant(when: datetime) -> str:
    """``format_instant``, cached: seeding formats the same few instants a million times."""
    return format_instant(when)


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
            "expiration": _instant(expiration),
            "first_use": None,
            "allowed_uses": 1,
            "uses_count": 0,
            "time_created": "2024-01-01T00:00:00.000Z",
            "vendor_extra": {"zone": "A", "fare": 2.75},
        },
    }


def a_user(user_id: int, now: datetime, *, due: bool = False, terminal: bool = False) -> Document:
    """A user with 3 passes, as this service leaves the document after evaluating it.

    Default: 3 USABLE passes, ``next_check_at`` = the earliest expiration. ``due``: one pass
    already expired and ``next_check_at`` past. ``terminal``: every pass EXPIRED, so nothing
    can change by time alone (``next_check_at`` never: ``NEVER_DUE``): most users of a
    long-lived cache.
    ``pass_status_checked_at`` is set (the document was evaluated), so that a due sweep
    that finds never-evaluated documents by that marker does not count these.
    """
    expirations = [now + timedelta(days=30 + i) for i in range(3)]
    if due:
        expirations[0] = now - timedelta(hours=1)
    passes = [a_pass(user_id, i, exp) for i, exp in enumerate(expirations)]
    next_check: datetime | None = min(expirations)
    if terminal:
        for i, p in enumerate(passes):
            p["status"] = p["payload"]["status"] = "EXPIRED"
            p["payload"]["expiration"] = _instant(now - timedelta(days=60 + i))
        next_check = None
    return {
        "user_id": user_id,
        "timestamp": 1700000000,
        "passes": passes,
        "passes4": [{"legacy": True}],
        "passesLog": [],
        "passes4Log": [],
        NEXT_CHECK_AT: stored_next_check_at(next_check),
        CHECKED_AT: now - timedelta(minutes=5),
    }


def mongo_client(uri: str) -> AsyncMongoClient[Document]:
    # A socket timeout, so that a server that stops answering fails the benchmark instead
    # of hanging it; long enough for a full scan of the largest collection benchmarked.
    return AsyncMongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=10_000, socketTimeoutMS=600_000
    )


@dataclass(frozen=True, slots=True)
class Seeded:
    """How long seeding took: the bulk insert, then the service's own index creation."""

    users: int
    insert_seconds: float
    index_seconds: float

    @property
    def seconds(self) -> float:
        return self.insert_seconds + self.index_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "seconds": round(self.seconds, 2),
            "insert_seconds": round(self.insert_seconds, 2),
            "index_seconds": round(self.index_seconds, 2),
            "users_per_second": round(self.users / max(self.seconds, 1e-9)),
        }


def user_kind(user_id: int, due_every: int, terminal_every: int) -> tuple[bool, bool]:
    """(due, terminal) of seeded user ``user_id``: every ``due_every``-th is due, every
    ``terminal_every``-th of the others holds only terminal passes (0: none)."""
    due = bool(due_every) and user_id % due_every == 0
    terminal = not due and bool(terminal_every) and user_id % terminal_every == 1
    return due, terminal


SEED_CHUNK = 10_000  # documents per insert_many: a few round trips per 100,000 users
SEED_ATTEMPTS = 3


async def seed_users(
    uri: str,
    database: str,
    users: int,
    *,
    due_every: int = 0,
    terminal_every: int = 0,
    chunk: int = SEED_CHUNK,
    parallel: int = 2,
) -> Seeded:
    """Insert users 1..``users`` in bulk, then create the indexes as the service does.

    Documents are built chunk by chunk (memory stays small at 1,000,000 users) and written
    with unordered ``insert_many`` calls, ``parallel`` at a time. The indexes are then
    created by the checked-out service's own ``ensure_indexes`` (after the load, as one
    would restore a dump), so the collection has exactly the indexes the service's
    queries are written for, whatever this branch's version of them is.
    """
    client = mongo_client(uri)
    coll = client[database][COLLECTION]
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        sem = asyncio.Semaphore(parallel)

        async def insert(first: int) -> None:
            last = min(users, first + chunk - 1)
            async with sem:
                docs = []
                for u in range(first, last + 1):
                    due, terminal = user_kind(u, due_every, terminal_every)
                    docs.append(a_user(u, now, due=due, terminal=terminal))
                for attempt in range(SEED_ATTEMPTS):
                    try:
                        await coll.insert_many(docs, ordered=False)
                    except AutoReconnect:  # the server restarted: redo this chunk
                        if attempt == SEED_ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(2)
                        await coll.delete_many({"user_id": {"$gte": first, "$lte": last}})
                        for d in docs:
                            d.pop("_id", None)
                    else:
                        return

        await asyncio.gather(*(insert(first) for first in range(1, users + 1, chunk)))
    finally:
        await client.close()
    inserted = time.perf_counter()
    await create_service_indexes(uri, database)
    return Seeded(users, inserted - started, time.perf_counter() - inserted)


def service_settings(uri: str, database: str) -> Settings:
    """The service's settings for ``database`` (defaults otherwise)."""
    return Settings.from_env(
        {"PASS_STATUS_MONGODB_URI": uri, "PASS_STATUS_MONGODB_DATABASE": database}
    )


async def create_service_indexes(uri: str, database: str) -> None:
    """The indexes of the checked-out service, created by its own code."""
    async with core(service_settings(uri, database)) as c:
        await c.store.ensure_indexes()


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


def listener_pid(port: int) -> int | None:
    """The PID of the local process listening on TCP ``port`` (None if not found or not
    ours to see): the socket's inode from /proc/net/tcp*, then the process holding it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local address "ADDR:PORT" in hex; state 0A = LISTEN
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if str(fd.readlink()) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _local_port(address: str, default: int) -> int | None:
    """The port of ``host[:port]`` if the host is this machine, else None."""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    if host.strip("[]") not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:  # noqa: S104
        return None
    return int(port) if port.isdigit() else default


def server_pids(ep: Endpoints) -> dict[str, int]:
    """PIDs of the Kafka broker and the MongoDB-compatible store, when they run on this
    machine (found by their listening ports), so that their CPU time can be read."""
    found: dict[str, int] = {}
    hosts = urllib.parse.urlsplit(ep.mongodb_uri).netloc.rsplit("@", 1)[-1].split(",")
    for name, address, default in (
        ("kafka", ep.bootstrap.split(",")[0], 9092),
        ("store", hosts[0], 27017),
    ):
        port = _local_port(address, default)
        pid = listener_pid(port) if port is not None else None
        if pid is not None:
            found[name] = pid
    return found


def machine_cpu_seconds() -> float:
    """CPU seconds used by everything on this machine so far (all cores, /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid: int, ep: Endpoints) -> dict[str, float]:
    """CPU seconds so far of the pipeline ``pid``, the local servers and the machine."""
    snap = {"pipeline": cpu_seconds(pid)}
    snap.update({name: cpu_seconds(p) for name, p in server_pids(ep).items()})
    snap["machine"] = machine_cpu_seconds()
    return snap


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
