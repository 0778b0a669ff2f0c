"""Poison under load (issue 19): what the scenario measures besides the checker.

- :class:`LagMonitor` samples, every second, each ticket-used partition's committed
  offset and end offset, and finds the longest time a partition had lag while its
  committed offset did not move (a stall), outside the windows the test declares (a
  refusal it caused on purpose).
- :func:`refuse_status_topic` makes the broker refuse every status-change event (the
  topic's ``max.message.bytes`` set below their size) for a while, then restores it: the
  service must pause, dead-letter nothing for it, and resume by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from tests.faults.scenario import committed_offsets

BROKER_DEFAULT_MAX_MESSAGE_BYTES = "1048588"


@dataclass
class LagMonitor:
    bootstrap: str
    group_id: str
    topic: str
    partitions: int = 3
    samples: list[tuple[float, dict[int, int], dict[int, int]]] = field(default_factory=list)
    excluded: list[tuple[float, float]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            while not stop.is_set():
                with contextlib.suppress(KafkaError, TimeoutError):
                    ends = await asyncio.wait_for(consumer.end_offsets(tps), 5)
                    committed = await asyncio.wait_for(
                        committed_offsets(self.bootstrap, self.group_id, self.topic), 5
                    )
                    self.samples.append(
                        (time.monotonic(), committed, {tp.partition: o for tp, o in ends.items()})
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await consumer.stop()

    def exclude(self, start: float, end: float) -> None:
        self.excluded.append((start, end))

    def _excluded(self, at: float) -> bool:
        return any(start <= at <= end for start, end in self.excluded)

    def longest_stall(self) -> float:
        """Longest time (s) a partition had lag with its committed offset unchanged, counted
        only at samples outside the excluded windows."""
        longest = 0.0
        for partition in range(self.partitions):
            since: float | None = None
            last: int | None = None
            for at, committed, ends in self.samples:
                done = committed.get(partition, 0)
                lag = ends.get(partition, 0) - done
                if lag <= 0 or done != last or self._excluded(at):
                    since = at if lag > 0 and not self._excluded(at) else None
                elif since is not None:
                    longest = max(longest, at - since)
                last = done
        return round(longest, 1)


async def _set_max_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": value})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def refuse_status_topic(bootstrap: str, topic: str, seconds: float) -> tuple[float, float]:
    """The broker refuses every record of ``topic`` for ``seconds``; returns the window."""
    start = time.monotonic()
    await _set_max_message_bytes(bootstrap, topic, "64")
    await asyncio.sleep(seconds)
    await _set_max_message_bytes(bootstrap, topic, BROKER_DEFAULT_MAX_MESSAGE_BYTES)
    return start, time.monotonic()
