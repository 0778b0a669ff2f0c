"""Questions about the local Kafka cluster that ``scripts/services`` answers for fault scenarios.

    python scripts/lib/kafka_cluster.py leader-of BOOTSTRAP TOPIC PARTITION   -> broker id
    python scripts/lib/kafka_cluster.py coordinator-of BOOTSTRAP GROUP        -> broker id

Each prints one integer on stdout, or one line on stderr and exits 1 (no leader, unknown
topic, no coordinator) or 2 (bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

# A broker just killed is still in the client's metadata, a group's coordinator is found only
# once __consumer_offsets exists: answers are retried for this long.
PATIENCE_S = 20.0


async def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - fast --help

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for item in described:
        if item.get("error_code"):
            raise LookupError(f"topic {topic}: error code {item['error_code']}")
        for part in item.get("partitions") or []:
            if part.get("partition") == partition:
                leader = int(part.get("leader", -1))
                if leader < 0:
                    raise LookupError(f"{topic}[{partition}] has no leader")
                return leader
    raise LookupError(f"{topic}[{partition}] does not exist")


async def coordinator_of(bootstrap: str, group: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - fast --help

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return int(await admin.find_coordinator(group))
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    leader = commands.add_parser("leader-of", help="the broker id leading a partition")
    leader.add_argument("bootstrap")
    leader.add_argument("topic")
    leader.add_argument("partition", type=int)
    coordinator = commands.add_parser("coordinator-of", help="the broker id coordinating a group")
    coordinator.add_argument("bootstrap")
    coordinator.add_argument("group")
    args = parser.parse_args(argv)
    quiet = logging.getLogger("aiokafka")  # refused connections to a stopped broker
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    if args.command == "leader-of":
        ask: Callable[[], Coroutine[Any, Any, int]] = lambda: leader_of(  # noqa: E731
            args.bootstrap, args.topic, args.partition
        )
    else:
        ask = lambda: coordinator_of(args.bootstrap, args.group)  # noqa: E731
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            print(asyncio.run(ask()))
        except Exception as exc:  # noqa: BLE001 - one line for the caller, whatever failed
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            print(f"{args.command}: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
