"""A local three-broker Kafka cluster of the scenarios' own (``scripts/services up --brokers
3`` in a state directory of its own) and a probe of the consumer group's progress."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.conftest import SERVICES_SCRIPT

BROKERS = 3


def free_port_block(size: int = 10) -> int:
    """The first of ``size`` consecutive free ports (broker N on base + N - 1, controller + 9)."""
    forced = os.environ.get("PASS_STATUS_FAULTS_CLUSTER_PORT")
    if forced:
        return int(forced)
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + size > 65000:
            continue
        if all(_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalCluster:
    """Three brokers and one controller; brokers may be killed and started again."""

    state: Path
    mongodb_uri: str  # used, never started
    base_port: int = field(default_factory=free_port_block)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.base_port + i}" for i in range(BROKERS))

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"}
        env.update(
            PASS_STATUS_STATE=str(self.state),
            PASS_STATUS_MONGODB_URI=self.mongodb_uri,
            PASS_STATUS_LOCAL_KAFKA_CLUSTER_PORT=str(self.base_port),
            PASS_STATUS_LOCAL_KAFKA_BROKERS=str(BROKERS),
            PASS_STATUS_LOCAL_KAFKA_HEAP=os.environ.get("PASS_STATUS_LOCAL_KAFKA_HEAP", "256m"),
        )
        return env

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(SERVICES_SCRIPT), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def up(self) -> None:
        self.run("up")

    def wipe(self) -> None:
        self.run("down", "--wipe", "cluster")

    def kill_broker(self, number: int, *, graceful: bool = False) -> None:
        self.run("kill-broker", str(number), *(["--graceful"] if graceful else []))

    def start_broker(self, number: int) -> None:
        self.run("start-broker", str(number))

    def leader_of(self, topic: str, partition: int) -> int:
        return int(self.run("leader-of", topic, str(partition)).strip())

    def coordinator_of(self, group: str) -> int:
        return int(self.run("coordinator-of", group).strip())


@contextlib.contextmanager
def local_cluster(state: Path, mongodb_uri: str) -> Iterator[LocalCluster]:
    cluster = LocalCluster(state, mongodb_uri)
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.wipe()


@dataclass
class ProgressProbe:
    """Samples the group's committed offsets (all input partitions, summed) every second.

    The longest stall is the longest time without the sum moving, from the first commit to
    the moment it reaches its final value (traffic keeps arriving until then, so any pause in
    it is the service not making progress). :meth:`fault_stall`: the stall a fault caused
    and the time until commits resumed."""

    bootstrap: str
    group: str
    topics: tuple[str, ...]
    samples: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        admin: AIOKafkaAdminClient | None = None
        while not stop.is_set():
            try:
                if admin is None:
                    admin = AIOKafkaAdminClient(
                        bootstrap_servers=self.bootstrap, request_timeout_ms=3000
                    )
                    await admin.start()
                offsets = await asyncio.wait_for(
                    admin.list_consumer_group_offsets(self.group), timeout=5
                )
                total = sum(m.offset for tp, m in offsets.items() if tp.topic in self.topics)
                self.samples.append((time.monotonic(), total))
            except (KafkaError, OSError, TimeoutError):
                self.errors += 1
                if admin is not None:
                    with contextlib.suppress(KafkaError, OSError):
                        await admin.close()
                    admin = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    def _moves(self) -> list[float]:
        """When the committed sum moved (first sample of each new value)."""
        moves, last = [], None
        for at, total in self.samples:
            if total > 0 and total != last:
                moves.append(at)
                last = total
        return moves

    def longest_stall(self) -> float:
        moves = self._moves()
        return max((b - a for a, b in itertools.pairwise(moves)), default=0.0)

    def fault_stall(self, fault_at: float, fault_ended_at: float) -> tuple[float, float | None]:
        """The longest commit gap touching the fault (from the last commit before it to 30 s
        after it ended), and the seconds from the fault's start until commits resumed after
        that gap (the time to recover; None: no commit after the fault)."""
        moves = self._moves()
        gaps = [
            (a, b) for a, b in itertools.pairwise(moves) if b > fault_at and a < fault_ended_at + 30
        ]
        if not gaps:
            return 0.0, None
        a, b = max(gaps, key=lambda gap: gap[1] - gap[0])
        return round(b - a, 1), round(b - fault_at, 1)
