"""Helpers for running the real consumer against the real Kafka and MongoDB-compatible server.

Each test gets its own topics, database and consumer group (see ``service_env``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from consumer.settings import Settings

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class ServiceEnv:
    """The PASS_STATUS_* environment of one isolated deployment."""

    env: dict[str, str]
    settings: Settings

    def with_overrides(self, **overrides: str) -> ServiceEnv:
        env = {**self.env, **{f"PASS_STATUS_{k.upper()}": v for k, v in overrides.items()}}
        return ServiceEnv(env, Settings.from_env(env))


def service_environment(prefix: str, bootstrap: str, mongodb_uri: str, **extra: str) -> ServiceEnv:
    env = {
        "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PASS_STATUS_MONGODB_URI": mongodb_uri,
        "PASS_STATUS_MONGODB_DATABASE": prefix,
        "PASS_STATUS_GROUP_ID": prefix,
        "PASS_STATUS_HTTP_HOST": "127.0.0.1",
        "PASS_STATUS_HTTP_PORT": "0",
        "PASS_STATUS_TOPIC_TICKET_USED": f"{prefix}.ticket-used",
        "PASS_STATUS_TOPIC_TICK": f"{prefix}.tick",
        "PASS_STATUS_TOPIC_STATUS_CHANGED": f"{prefix}.status-changed",
        "PASS_STATUS_TOPIC_CHECK_LOG": f"{prefix}.check-log",
        "PASS_STATUS_TOPIC_DEAD_LETTER": f"{prefix}.dead-letter",
        "PASS_STATUS_CHECK_LOG_INTERVAL_SECONDS": "1",
        "PASS_STATUS_OUTBOX_RELAY_INTERVAL_SECONDS": "1",
        "PASS_STATUS_OUTBOX_ORPHAN_AGE_SECONDS": "2",
        "PASS_STATUS_SESSION_TIMEOUT_MS": "6000",
        "PASS_STATUS_SHUTDOWN_GRACE_SECONDS": "15",
        "PASS_STATUS_BACKOFF_MAX_SECONDS": "2",
        "PASS_STATUS_MONGODB_TIMEOUT_MS": "3000",
    }
    env.update({f"PASS_STATUS_{k.upper()}": v for k, v in extra.items()})
    return ServiceEnv(env, Settings.from_env(env))


def all_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_ticket_used,
        settings.topic_tick,
        settings.topic_status_changed,
        settings.topic_check_log,
        settings.topic_dead_letter,
    ]


@dataclass
class ConsumerProcess:
    """``python -m consumer run`` as a child process, its JSON log lines collected."""

    service: ServiceEnv
    name: str = "consumer"
    proc: subprocess.Popen[bytes] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    port: int | None = None
    _reader: threading.Thread | None = None

    def start(self, *, wait_assigned: bool = True, timeout: float = 60) -> ConsumerProcess:
        env = {**os.environ, **self.service.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("consumer_started" if not wait_assigned else "partitions_assigned", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                entry = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                if entry.get("event") == "http_server_started":
                    self.port = int(entry["port"])
                self.lines.append(entry)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.lines) if e.get("event") == name]

    def wait_for(self, event: str, timeout: float = 60, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event)
            if len(found) >= count:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.proc.returncode}:\n" + "\n".join(self.raw[-40:])
                )
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name}: no {event!r} within {timeout}s:\n" + "\n".join(self.raw[-40:])
        )

    def http_get(self, path: str) -> tuple[int, bytes]:
        assert self.port is not None, "HTTP port not known yet"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as err:
            return int(err.code), bytes(err.read())

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def run_cli(service: ServiceEnv, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m consumer ARGS`` with ``service``'s settings, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, **service.env},
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )


async def produce(
    bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_json(
    bootstrap: str, topic: str, events: Iterable[Mapping[str, Any]], key_field: str = "user_id"
) -> None:
    await produce(
        bootstrap,
        topic,
        [(str(e.get(key_field, 0)).encode(), orjson.dumps(e)) for e in events],
    )


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    wait: float = 30,
    settle: float = 1.0,
) -> list[Any]:
    """Every record on ``topic`` from the start: waits for ``expect`` records (or ``wait`` seconds),
    then ``settle`` more seconds to catch any extra (e.g. a duplicate that must not exist)."""
    # Without a group the consumer is assigned every partition and reads from the start.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + wait
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if expect is not None and len(records) >= expect and settle_until is None:
                settle_until = now + settle
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


def values(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], wait: float = 20
) -> T:
    """Poll ``probe`` until ``accept`` says yes; fail with the last value after ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        value = await probe()
        if accept(value) or time.monotonic() > deadline:
            assert accept(value), f"condition not met within {wait}s; last value: {value!r}"
            return value
        await asyncio.sleep(0.1)
